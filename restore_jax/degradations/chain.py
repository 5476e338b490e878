"""Composition: `chain` applies steps in a fixed or shuffled order, each with its own probability; `one_of`
applies one step drawn by weight.

Mixing degradations in training is the image translator's advice (Liu Shiqiang, lsqpku/img2img): a model
trained on Gaussian blur alone fails on resize blur, one trained on both handles both. Config:

    {"name": "chain", "order": "fixed",              # or "shuffle": a new random order per sample
     "steps": ("blur", "noise", "jpeg"),             # the order, naming the sub-dicts below
     "blur": {"name": "gaussian_blur", "prob": 1.0, "sigma": (0.5, 2.0)},
     "noise": {"name": "gaussian_noise", "prob": 0.5, "sigma": (0.0, 0.05)},
     "jpeg": {"name": "jpeg", "prob": 0.5, "quality": (40, 90)}}

    {"name": "one_of", "steps": ("gaussian", "resize"), "weights": (1.0, 1.0),
     "gaussian": {"name": "gaussian_blur", "sigma": (0.5, 3.0)}, "resize": {"name": "resize_blur"}}

Every sub-dict is a plain config of its family, so `--config.degradation.noise.sigma=(0.0,0.1)` overrides it.
Steps that change the size or the channels must always run (prob 1) and, with a mask-making step, may not
resize after it, so every sample of a recipe has the same shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from restore_jax.degradations.base import Degradation, Options
from restore_jax.degradations.registry import make_degradation, register

ORDERS = ("fixed", "shuffle")


def chain_config(order: str = "fixed", **steps: Mapping[str, Any]) -> dict[str, Any]:
  """A `chain` config from step name -> family config (e.g. from default_config), in the order given; each
  step gets an explicit `prob` (1.0 unless given), so the recipe holds every key the command line may set."""
  config: dict[str, Any] = {"name": "chain", "order": order, "steps": tuple(steps)}
  for name, step in steps.items():
    config[name] = {"prob": 1.0, **step}
  make_degradation(config, path="chain_config(...)")  # Fail here, not at training time.
  return config


def one_of_config(weights: tuple[float, ...] | None = None, **steps: Mapping[str, Any]) -> dict[str, Any]:
  """A `one_of` config from step name -> family config, with explicit weights (equal unless given)."""
  config: dict[str, Any] = {"name": "one_of", "steps": tuple(steps),
                            "weights": tuple(float(w) for w in weights) if weights else (1.0,) * len(steps)}
  config.update({name: dict(step) for name, step in steps.items()})
  make_degradation(config, path="one_of_config(...)")
  return config


def _step_names(config: Mapping[str, Any], path: str, reserved: tuple[str, ...]) -> tuple[str, ...]:
  steps = config.get("steps", ())
  steps = (steps,) if isinstance(steps, str) else tuple(steps)
  if not steps or not all(isinstance(s, str) for s in steps):
    raise ValueError(f"{path}.steps must be a non-empty tuple of step names, got {steps!r}.")
  if len(set(steps)) != len(steps):
    raise ValueError(f"{path}.steps names a step twice: {steps!r}; give each use its own sub-dict.")
  for step in steps:
    if step in reserved:
      raise ValueError(f"{path}.steps may not use the reserved name {step!r}.")
    if step not in config:
      raise ValueError(f"{path}.steps names {step!r}, but {path}.{step} is missing; add a sub-dict "
                       f"{{'name': ..., ...}} for it.")
  extra = sorted(set(config) - set(steps) - set(reserved))
  if extra:
    raise ValueError(f"{path}.{extra[0]} is neither an option of {path} ({', '.join(reserved)}) nor one of its "
                     f"steps {steps!r}.")
  return steps


def _sub_config(config: Mapping[str, Any], step: str, path: str) -> dict[str, Any]:
  sub = config[step]
  if not hasattr(sub, "keys"):
    raise ValueError(f"{path}.{step} must be a dict naming a degradation, got {sub!r}.")
  return {key: sub[key] for key in sub}


@register("chain")
class Chain(Degradation):
  """Steps in order ("fixed") or in a random order per sample ("shuffle"), each run with its `prob`."""

  DEFAULTS = dict(order="fixed", steps=())
  _RESERVED = ("name", "order", "steps")

  @classmethod
  def from_config(cls, config: Mapping[str, Any], path: str) -> "Chain":
    names = _step_names(config, path, cls._RESERVED)
    opts = Options({k: config[k] for k in cls._RESERVED if k in config}, path, cls.DEFAULTS)
    steps = []
    for name in names:
      sub = _sub_config(config, name, path)
      prob = Options({"prob": sub.pop("prob", 1.0)}, f"{path}.{name}", {"prob": 1.0}).probability("prob")
      steps.append((name, make_degradation(sub, f"{path}.{name}"), prob))
    return cls(opts, steps)

  def __init__(self, opts: Options, steps: list[tuple[str, Degradation, float]]):
    self.order = opts.choice("order", ORDERS)
    self.steps = steps
    path = opts.path
    channels, seen_mask = 3, False
    self.scale = 1
    for name, step, prob in steps:
      changes = step.scale != 1 or step.output_channels(channels) != channels
      if changes and prob < 1:
        raise ValueError(f"{path}.{name}.prob must be 1: the step changes the size or the channels, so skipping "
                         f"it would change the shape of the input; got {prob}.")
      if step.scale != 1 and (seen_mask or (self.order == "shuffle" and any(s.makes_mask for _, s, _ in steps))):
        raise ValueError(f"{path}.{name} resizes the image after (or, shuffled, maybe after) a step that makes a "
                         f"mask; resize first, in a fixed order.")
      seen_mask = seen_mask or step.makes_mask
      channels = step.output_channels(channels)
      self.scale *= step.scale
    self.makes_mask = seen_mask

  def output_channels(self, channels: int) -> int:
    for _, step, _ in self.steps:
      channels = step.output_channels(channels)
    return channels

  def apply_masked(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    order = rng.permutation(len(self.steps)) if self.order == "shuffle" else range(len(self.steps))
    mask = None
    for index in order:
      _, step, prob = self.steps[index]
      if prob < 1 and rng.uniform() >= prob:
        continue
      img, new_mask = step.apply_masked(img, rng)
      if new_mask is not None:
        mask = new_mask if mask is None else np.maximum(mask, new_mask)
    if self.makes_mask and mask is None:
      mask = np.zeros(img.shape[:2] + (1,), np.float32)
    return img, mask

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return self.apply_masked(img, rng)[0]

  def prepare_input(self, photo: np.ndarray) -> np.ndarray:
    for _, step, _ in self.steps:
      photo = step.prepare_input(photo)
    return photo

  def prepare(self, photo: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each step's own preparation in the listed order (luma for grayscale, the mask for damage)."""
    example = {"input": photo}
    for _, step, _ in self.steps:
      prepared = step.prepare(example["input"], mask) if step.makes_mask else step.prepare(example["input"])
      example["input"] = prepared["input"]
      if "mask" in prepared:
        example["mask"] = prepared["mask"]
    if self.makes_mask and "mask" not in example:
      example["mask"] = np.zeros(np.shape(photo)[:2] + (1,), np.float32)
    return example


@register("one_of")
class OneOf(Degradation):
  """One of `steps` per sample, drawn with `weights` (all steps must give the same shapes)."""

  DEFAULTS = dict(steps=(), weights=())
  _RESERVED = ("name", "steps", "weights")

  @classmethod
  def from_config(cls, config: Mapping[str, Any], path: str) -> "OneOf":
    names = _step_names(config, path, cls._RESERVED)
    fields = {k: config[k] for k in cls._RESERVED if k in config}
    if not fields.get("weights"):
      fields["weights"] = (1.0,) * len(names)
    opts = Options(fields, path, cls.DEFAULTS)
    steps = [(name, make_degradation(_sub_config(config, name, path), f"{path}.{name}")) for name in names]
    return cls(opts, steps)

  def __init__(self, opts: Options, steps: list[tuple[str, Degradation]]):
    self.steps = steps
    self.probs = opts.weights("weights", len(steps))
    first_name, first = steps[0]
    for name, step in steps[1:]:
      if step.scale != first.scale or step.output_channels(3) != first.output_channels(3):
        raise ValueError(f"{opts.path}.{name} gives a different size or channels than {opts.path}.{first_name}; "
                         f"every choice of a one_of must give the same shapes.")
    self.scale = first.scale
    self.makes_mask = any(step.makes_mask for _, step in steps)

  def output_channels(self, channels: int) -> int:
    return self.steps[0][1].output_channels(channels)

  def apply_masked(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    _, step = self.steps[int(rng.choice(len(self.steps), p=self.probs))]
    img, mask = step.apply_masked(img, rng)
    if self.makes_mask and mask is None:
      mask = np.zeros(img.shape[:2] + (1,), np.float32)
    return img, mask

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return self.apply_masked(img, rng)[0]

  def prepare_input(self, photo: np.ndarray) -> np.ndarray:
    return self.steps[0][1].prepare_input(photo)

  def prepare(self, photo: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    masking = [step for _, step in self.steps if step.makes_mask]
    if masking:
      return masking[0].prepare(photo, mask)
    return self.steps[0][1].prepare(photo)
