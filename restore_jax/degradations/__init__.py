"""Degradations: clean HR image -> the degraded input a generator learns to undo.

A degradation is a function `(target, rng) -> {"input": ..., "mask": ...}`
on a float32 HWC image in [0, 1], taking a `np.random.Generator` so the data
pipeline can hand each sample its own seeded randomness. Families live in
their own modules and are chosen by name from `config.degradation`; adding one
is a new module plus a line in `DEGRADATIONS`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from restore_jax.degradations.resize import imresize

Degradation = Callable[[np.ndarray, np.random.Generator], dict[str, np.ndarray]]


def bicubic(scale: int = 4) -> Degradation:
  """MATLAB-style antialiased bicubic downscaling by `scale` (the SR setup).

  The result is clipped to [0, 1] because images are in [0, 1] at every
  boundary; bicubic overshoot near edges is a few levels at most.
  """
  if scale < 1:
    raise ValueError(f"bicubic degradation needs scale >= 1, got {scale}.")

  def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng  # Deterministic.
    return {"input": np.clip(imresize(img, 1.0 / scale), 0.0, 1.0)}

  return degrade


# Name -> factory taking the config's keyword arguments.
DEGRADATIONS: dict[str, Callable[..., Degradation]] = {
    "bicubic": bicubic,
}


def make_degradation(config: Mapping[str, Any]) -> Degradation:
  """Builds the degradation named by `config.name` with the remaining keys."""
  kwargs = dict(config)
  name = kwargs.pop("name", None)
  if name not in DEGRADATIONS:
    raise ValueError(f"Unknown degradation {name!r}; set config.degradation.name "
                     f"to one of {sorted(DEGRADATIONS)}.")
  return DEGRADATIONS[name](**kwargs)


__all__ = ["DEGRADATIONS", "Degradation", "bicubic", "imresize",
           "make_degradation"]
