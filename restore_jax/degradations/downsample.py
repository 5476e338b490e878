"""Downsampling for super-resolution: MATLAB-style `bicubic`, and `resize` by any integer scale.

`bicubic` is the SR literature's low-resolution input (MATLAB's imresize, restore_jax.degradations.resize);
the published bicubic x4 baseline on Set5 (28.42 dB on Y, 4-pixel border) depends on its exact numbers, so it
stays as it is. `resize` offers bicubic, bilinear and area (box) downsampling by any integer scale with
Pillow's antialiased kernels (restore_jax.degradations.resample).
"""

from __future__ import annotations

import numpy as np

from restore_jax.degradations import resample
from restore_jax.degradations.base import Degradation, Options, check_divisible
from restore_jax.degradations.registry import register
from restore_jax.degradations.resize import imresize


@register("bicubic")
class Bicubic(Degradation):
  """MATLAB-style antialiased bicubic downscaling by `scale` (the SR setup).

  The output size is ceil(size / scale) as in MATLAB. The result is clipped to [0, 1] because images are
  in [0, 1] at every boundary; bicubic overshoot near edges is a few levels at most.
  """

  DEFAULTS = dict(scale=4)

  def __init__(self, opts: Options):
    self.scale = opts.number("scale", low=1, integer=True)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng  # Deterministic.
    return np.clip(imresize(img, 1.0 / self.scale), 0.0, 1.0)


@register("resize")
class Resize(Degradation):
  """Downscales by an integer `scale` with `method` (bicubic, bilinear or area), antialiased like Pillow;
  antialias=False resamples like PyTorch's F.interpolate (aliasing kept). The target's size must be a
  multiple of the scale."""

  DEFAULTS = dict(scale=4, method="bicubic", antialias=True)

  def __init__(self, opts: Options):
    self.scale = opts.number("scale", low=1, integer=True)
    self.method = opts.choice("method", resample.METHODS)
    self.antialias = opts.flag("antialias")
    self._path = opts.path

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    height, width = check_divisible(img, self.scale, self._path)
    return np.clip(resample.resize(img, height, width, self.method, self.antialias), 0.0, 1.0)
