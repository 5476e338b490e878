"""`config.imports`: the user's own modules, imported so their registry entries exist before anything is built.

A degradation, network or loss term that lives outside restore_jax registers itself when its module is imported
(e.g. `DEGRADATIONS["my_blur"] = my_blur` at module level). Naming the module in the recipe's `imports` makes
training, evaluation, restoration and data-loading worker processes import it, since they all read the config.
"""

import importlib
from collections.abc import Iterable, Mapping
from typing import Any


def import_modules(names: Iterable[str]) -> None:
  for name in names:
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise ValueError(f"config.imports names the module {name!r}, which cannot be imported ({e}). Make it "
                       "importable (installed, or on PYTHONPATH) or remove it from config.imports.") from e


def import_for(config: Mapping[str, Any]) -> None:
  """Imports the modules a recipe config names in `imports` (none: nothing to do)."""
  import_modules(tuple(config.get("imports") or ()))
