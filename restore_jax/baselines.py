"""Baselines a trained model must beat: restore functions that learn nothing.

Each factory returns `restore_fn(degraded HWC float [0, 1], mask) -> HWC float [0, 1]`, the shape
`restore_jax.evaluate.score` takes, so a baseline is scored by exactly the code that scores a model. The mask of
missing pixels (inpainting) is ignored: a baseline leaves the damage where it is. A gray input is repeated on
the target's channels (colorization's baseline is the gray photo itself).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.ndimage

from restore_jax import task as task_lib
from restore_jax.degradations.resize import imresize

RestoreFn = Callable[..., np.ndarray]


def bicubic(scale: int) -> RestoreFn:
  """MATLAB-style bicubic upscaling by `scale`: the baseline behind the SR literature's bicubic numbers."""
  _check_scale(scale, "bicubic")

  def restore(degraded: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    del mask
    _check_image(degraded)
    if scale == 1:
      return np.asarray(degraded, np.float32)
    return np.clip(imresize(degraded, float(scale)), 0.0, 1.0)

  return restore


def identity(scale: int = 1) -> RestoreFn:
  """The degraded input itself, nearest-upscaled by `scale` so it lines up with the clean image."""
  _check_scale(scale, "identity")

  def restore(degraded: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    del mask
    _check_image(degraded)
    image = np.asarray(degraded, np.float32)
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)

  return restore


def median(size: int = 3) -> RestoreFn:
  """A `size` x `size` median filter on each channel: the classic remedy for grain and impulse noise.

  Edges are mirrored (scipy's "reflect"), so the border pixels are filtered like the rest.
  """
  if size < 1:
    raise ValueError(f"median baseline needs a window size >= 1, got {size}.")

  def restore(degraded: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    del mask
    _check_image(degraded)
    image = np.asarray(degraded, np.float32)
    return scipy.ndimage.median_filter(image, size=(size, size, 1), mode="reflect")

  return restore


# Name -> factory taking the recipe's scale (the evaluate CLI's --baseline).
BASELINES: dict[str, Callable[[int], RestoreFn]] = {
    "bicubic": bicubic,
    "identity": identity,
    "median": lambda scale: median(3),  # A 3x3 window: grain is pixel-sized; scale 1 recipes only.
}


def make_baseline(name: str, task: task_lib.Task) -> RestoreFn:
  """The baseline called `name` for a task (its scale, and its output channels for gray inputs)."""
  if name not in BASELINES:
    raise ValueError(f"Unknown baseline {name!r}; choose one of {', '.join(sorted(BASELINES))}.")
  if name == "median" and task.scale != 1:
    raise ValueError(f"The median baseline does not upscale, but this recipe's task.scale is {task.scale}; use "
                     "it with a recipe whose degradation keeps the size (scale 1), or use --baseline bicubic.")
  restore = BASELINES[name](task.scale)
  return lambda degraded, mask=None: task_lib.to_rgb(restore(degraded, mask), task.out_channels)


def _check_scale(scale: int, name: str) -> None:
  if int(scale) != scale or scale < 1:
    raise ValueError(f"{name} baseline needs an integer scale >= 1, got {scale}.")


def _check_image(image: np.ndarray) -> None:
  if np.ndim(image) != 3:
    raise ValueError(f"Baselines restore one HWC image at a time, got shape {np.shape(image)}.")
