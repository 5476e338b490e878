"""What every degradation shares: the call contract, and reading its config keys.

A degradation turns one clean HWC float32 image in [0, 1] into what a generator
sees. `make_degradation(config)` builds one from its config keys, and
`Options` checks those keys when the degradation is built (config time), so a
typo or an out-of-range value fails before the first sample with the full key
in the message, e.g. "degradation.noise.sigma must be >= 0, got -0.1".

Range-valued keys take a number (fixed) or a (low, high) pair sampled
uniformly per sample; a 1-tuple also means fixed, because that is what
ml_collections makes of `--config.KEY=0.3` on a tuple-valued field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

Span = tuple[float, float]


def _show(value: Any) -> str:
  """A config value as a user would write it (lists from JSON shown as tuples)."""
  if isinstance(value, list):
    value = tuple(value)
  return repr(value) if isinstance(value, str) else str(value)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


class Options:
  """One degradation's config keys: unknown keys, presets and bad values raise ValueError.

  Args:
    config: the family's mapping (a ConfigDict or dict) including `name`.
    path: the config path of that mapping, e.g. "degradation" or "degradation.noise".
    defaults: every key the family takes, with its default.
    presets: preset name -> the key values it sets. A preset supplies values for the keys it names; giving
      such a key as well is an error, because it is unclear which should win.
  """

  def __init__(self, config: Mapping[str, Any], path: str, defaults: Mapping[str, Any],
               presets: Mapping[str, Mapping[str, Any]] | None = None):
    self.path = path
    given = {key: config[key] for key in config}
    self.name = given.pop("name", None)
    allowed = set(defaults) | ({"preset"} if presets else set())
    unknown = sorted(set(given) - allowed)
    if unknown:
      raise ValueError(f"{path}.{unknown[0]} is not an option of the {self.name!r} degradation; "
                       f"its options are {', '.join(sorted(allowed))}.")
    values = dict(defaults)
    preset = given.pop("preset", "")
    if preset:
      if preset not in presets:
        raise ValueError(f"{path}.preset must be one of {', '.join(map(repr, presets))} (or '' for none), "
                         f"got {preset!r}.")
      clash = sorted(set(given) & set(presets[preset]))
      if clash:
        raise ValueError(f"{path}.{clash[0]} is set and so is {path}.preset={preset!r}, which sets it too; "
                         f"remove one of them.")
      values.update(presets[preset])
    values.update(given)
    self.values = values

  def key(self, key: str) -> str:
    """The full config path of `key`, for error messages."""
    return f"{self.path}.{key}"

  def raw(self, key: str) -> Any:
    return self.values[key]

  def number(self, key: str, *, low: float | None = None, high: float | None = None, above: float | None = None,
             integer: bool = False) -> float:
    """A single number within [low, high] (and > above)."""
    value = self.values[key]
    if isinstance(value, (tuple, list)) and len(value) == 1:
      value = value[0]
    kind = "an integer" if integer else "a number"
    if not _is_number(value) or (integer and int(value) != value):
      raise ValueError(f"{self.key(key)} must be {kind}, got {_show(value)}.")
    self._check_bounds(key, [value], value, low, high, above)
    return int(value) if integer else float(value)

  def span(self, key: str, *, low: float | None = None, high: float | None = None, above: float | None = None,
           integer: bool = False) -> Span:
    """A (low, high) range to sample from; a number or 1-tuple gives low == high."""
    value = self.values[key]
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    kind = "integers" if integer else "numbers"
    if (len(items) not in (1, 2) or not all(_is_number(v) for v in items)
        or (integer and any(int(v) != v for v in items)) or items[0] > items[-1]):
      raise ValueError(f"{self.key(key)} must be a number or a (low, high) pair of {kind} with low <= high, "
                       f"got {_show(value)}.")
    self._check_bounds(key, items, value, low, high, above)
    cast = int if integer else float
    return cast(items[0]), cast(items[-1])

  def _check_bounds(self, key: str, items: Sequence[float], value: Any, low: float | None,
                    high: float | None, above: float | None) -> None:
    if above is not None and any(v <= above for v in items):
      raise ValueError(f"{self.key(key)} must be > {above:g}, got {_show(value)}.")
    if low is not None and high is not None and any(v < low or v > high for v in items):
      raise ValueError(f"{self.key(key)} must be in [{low:g}, {high:g}], got {_show(value)}.")
    if low is not None and any(v < low for v in items):
      raise ValueError(f"{self.key(key)} must be >= {low:g}, got {_show(value)}.")
    if high is not None and any(v > high for v in items):
      raise ValueError(f"{self.key(key)} must be <= {high:g}, got {_show(value)}.")

  def probability(self, key: str) -> float:
    return self.number(key, low=0.0, high=1.0)

  def choice(self, key: str, allowed: Sequence[str]) -> str:
    value = self.values[key]
    if value not in allowed:
      raise ValueError(f"{self.key(key)} must be one of {', '.join(map(repr, allowed))}, got {_show(value)}.")
    return value

  def choices(self, key: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """A non-empty tuple of names from `allowed` (a single string counts as a 1-tuple)."""
    value = self.values[key]
    items = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (tuple, list)) else None
    if not items or any(item not in allowed for item in items):
      raise ValueError(f"{self.key(key)} must be a non-empty tuple of {', '.join(map(repr, allowed))}, "
                       f"got {_show(value)}.")
    return items

  def weights(self, key: str, count: int) -> np.ndarray:
    """`count` non-negative weights with a positive sum, normalised to probabilities."""
    value = self.values[key]
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    if (len(items) != count or not all(_is_number(v) and v >= 0 for v in items) or sum(items) <= 0):
      raise ValueError(f"{self.key(key)} must be {count} non-negative weights with a positive sum, "
                       f"got {_show(value)}.")
    weights = np.asarray(items, np.float64)
    return weights / weights.sum()

  def flag(self, key: str) -> bool:
    value = self.values[key]
    if not isinstance(value, (bool, np.bool_)):
      raise ValueError(f"{self.key(key)} must be True or False, got {_show(value)}.")
    return bool(value)


def uniform(rng: np.random.Generator, span: Span) -> float:
  """A uniform draw from span; a fixed value draws nothing from rng."""
  low, high = span
  return low if low == high else float(rng.uniform(low, high))


def randint(rng: np.random.Generator, span: tuple[int, int]) -> int:
  """A uniform integer in [low, high], both included."""
  low, high = span
  return low if low == high else int(rng.integers(low, high + 1))


def odd_sizes(opts: Options, key: str, *, low: int = 1, high: int = 101) -> tuple[int, ...]:
  """The odd kernel sizes within the integer range of `key` (sampled uniformly among them)."""
  first, last = opts.span(key, low=low, high=high, integer=True)
  sizes = tuple(size for size in range(first, last + 1) if size % 2 == 1)
  if not sizes:
    raise ValueError(f"{opts.key(key)} must include an odd kernel size, got {_show(opts.raw(key))}.")
  return sizes


def as_image(img: np.ndarray, what: str = "target") -> np.ndarray:
  """HWC float32, checked."""
  img = np.asarray(img)
  if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
    raise ValueError(f"A degradation's {what} must be an HWC image, got shape {img.shape}.")
  return img.astype(np.float32, copy=False)


class Degradation:
  """Base class: `degrade(target, rng) -> {"input": ..., ["mask": ...]}`.

  Subclasses set DEFAULTS (every config key with its default; `name` excluded), optionally PRESETS, and
  implement `apply` (image -> image); damage-style families override `apply_masked` to return a mask too.
  Instances are plain picklable objects, so grain worker processes can hold them.
  """

  name: ClassVar[str] = ""
  DEFAULTS: ClassVar[dict[str, Any]] = {}
  PRESETS: ClassVar[dict[str, dict[str, Any]] | None] = None

  scale: int = 1  # Target size / input size.
  makes_mask: bool = False  # Whether `input` comes with a `mask` of missing pixels.

  @classmethod
  def from_config(cls, config: Mapping[str, Any], path: str) -> "Degradation":
    return cls(Options(config, path, cls.DEFAULTS, cls.PRESETS))

  def __init__(self, opts: Options):
    del opts

  def output_channels(self, channels: int) -> int:
    """Channels of the result for an input of `channels` channels."""
    return channels

  @property
  def channels(self) -> int:
    """Channels of `input` for an RGB target."""
    return self.output_channels(3)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    raise NotImplementedError

  def apply_masked(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """(degraded image, mask or None); the mask is (h, w, 1) float32 with 1 = missing."""
    return self.apply(img, rng), None

  def __call__(self, target: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    img = as_image(target)
    if img.shape[2] != 3:
      raise ValueError(f"A degradation's target must have 3 channels (RGB), got shape {img.shape}.")
    out, mask = self.apply_masked(img, rng)
    example = {"input": np.ascontiguousarray(out, np.float32)}
    if self.makes_mask:
      if mask is None:
        mask = np.zeros(out.shape[:2] + (1,), np.float32)
      example["mask"] = np.ascontiguousarray(mask, np.float32)
    return example

  def prepare_input(self, photo: np.ndarray) -> np.ndarray:
    """A real photo as this step's kind of input, without damaging it: the identity unless overridden."""
    return photo

  def prepare(self, photo: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Turns a real user photo (HWC float32 RGB in [0, 1]) into the model's input, without degrading it.

    Most families restore a photo as it is; grayscale takes its luma; damage finds (or takes) the mask.
    """
    del mask
    return {"input": np.ascontiguousarray(self.prepare_input(as_image(photo, "photo")), np.float32)}


def check_divisible(img: np.ndarray, scale: int, path: str) -> tuple[int, int]:
  """(h, w) of the input for a target that must be a multiple of `scale`."""
  height, width = img.shape[:2]
  if height % scale or width % scale:
    raise ValueError(f"The target's size {height}x{width} is not a multiple of {path}.scale={scale}; crop it "
                     f"to a multiple first (data.crop_size, or evaluation's mod-crop).")
  return height // scale, width // scale
