"""Degradation families by name, and building one from config.

A family registers itself with `@register("name")` on its Degradation subclass; a user's own family does the
same in a module named in `config.imports`, without a fork of the package.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

from restore_jax.degradations.base import Degradation

DEGRADATIONS: dict[str, type[Degradation]] = {}

_D = TypeVar("_D", bound=type[Degradation])


def register(name: str) -> Callable[[_D], _D]:
  """Class decorator adding a Degradation subclass to DEGRADATIONS under `name`."""

  def add(cls: _D) -> _D:
    if name in DEGRADATIONS and not _same_definition(DEGRADATIONS[name], cls):
      raise ValueError(f"A degradation called {name!r} is already registered ({DEGRADATIONS[name].__name__}).")
    cls.name = name
    DEGRADATIONS[name] = cls
    return cls

  return add


def _same_definition(a: type, b: type) -> bool:
  """The same class, or the same class statement loaded twice (a recipe file that both registers a degradation
  and names itself in config.imports is executed once as the config and once as the module)."""
  if a is b:
    return True
  try:
    files = [inspect.getsourcefile(c) for c in (a, b)]
    return a.__qualname__ == b.__qualname__ and None not in files and len({os.path.realpath(f) for f in files}) == 1
  except TypeError:
    return False


def make_degradation(config: Mapping[str, Any], path: str = "degradation") -> Degradation:
  """Builds the degradation named by `config.name`, checking every key (ValueError names the full key)."""
  if not isinstance(config, Mapping) and not hasattr(config, "keys"):
    raise ValueError(f"{path} must be a mapping with a 'name' key, got {config!r}.")
  name = config.get("name", None) if hasattr(config, "get") else None
  if name not in DEGRADATIONS:
    raise ValueError(f"Unknown degradation {name!r}: set {path}.name to one of {', '.join(sorted(DEGRADATIONS))}.")
  return DEGRADATIONS[name].from_config(config, path)


def scale_of(config: Mapping[str, Any]) -> int:
  """Output / input size ratio of the degradation `config` describes (4 for x4 SR, 1 for same-size tasks)."""
  return make_degradation(config).scale


def channels_of(config: Mapping[str, Any]) -> int:
  """Channels of the degradation's `input` for an RGB target (1 for grayscale, 3 otherwise)."""
  return make_degradation(config).channels


def default_config(name: str, **overrides: Any) -> dict[str, Any]:
  """Every key of family `name` with its default (and `overrides`), ready for a recipe's ConfigDict.

  Writing every key into the recipe is what makes each one overridable with `--config.degradation.KEY=...`.
  With a `preset`, the keys the preset sets are left out (giving both is an error).
  """
  if name not in DEGRADATIONS:
    raise ValueError(f"Unknown degradation {name!r}; choose one of {', '.join(sorted(DEGRADATIONS))}.")
  cls = DEGRADATIONS[name]
  config: dict[str, Any] = {"name": name, **cls.DEFAULTS}
  preset = overrides.get("preset", "")
  if preset and cls.PRESETS and preset in cls.PRESETS:
    for key in cls.PRESETS[preset]:
      config.pop(key, None)
  config.update(overrides)
  make_degradation(config, path=f"default_config({name!r})")  # Fail here, not at training time.
  return config
