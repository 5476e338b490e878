"""Noise families: additive Gaussian and Poisson (shot) noise, in colour or gray, clipped to [0, 1].

"Gray" noise is one noise plane shared by the three channels (luminance-only noise, as a camera's luma
noise looks); colour noise is independent per channel. Real-ESRGAN uses both (Wang et al. 2021, section 3.1:
gray_noise_prob 0.4).

Poisson: a pixel of intensity v collects Poisson(v * peak) photons, so the noisy value Poisson(v * peak) /
peak has mean v and variance v / peak: the larger `peak` (photons at white), the cleaner. `gain` scales the
noise (v + gain * (Poisson(v * peak) / peak - v)), which is how Real-ESRGAN parametrises it (its
poisson_scale_range is this gain, with peak the image's number of 8-bit levels rounded up to a power of 2).
"""

from __future__ import annotations

import numpy as np

from restore_jax.degradations.base import Degradation, Options, uniform
from restore_jax.degradations.registry import register

# ITU-R BT.601 luma weights (the Y of Y'CbCr), used for gray Poisson noise and the grayscale family.
BT601 = np.array([0.299, 0.587, 0.114], np.float32)


def luma(img: np.ndarray) -> np.ndarray:
  """BT.601 luma (H, W, 1) of an RGB image; a 1-channel image is returned as is."""
  if img.shape[2] == 1:
    return img
  r, g, b = BT601
  return (r * img[:, :, 0] + g * img[:, :, 1] + b * img[:, :, 2])[:, :, None]


def add_gaussian(img: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool) -> np.ndarray:
  """img + N(0, sigma^2), one plane for all channels when gray, clipped to [0, 1]."""
  shape = img.shape[:2] + (1,) if gray else img.shape
  noise = rng.standard_normal(shape, dtype=np.float32)
  noise *= np.float32(sigma)
  return np.clip(img + noise, 0.0, 1.0)


def add_poisson(img: np.ndarray, rng: np.random.Generator, peak: float, gain: float, gray: bool) -> np.ndarray:
  """img + gain * (Poisson(v * peak) / peak - v), v = the image (or its luma when gray), clipped to [0, 1]."""
  source = luma(img) if gray else img
  source = np.clip(source, 0.0, None)
  counts = rng.poisson(source * np.float64(peak)).astype(np.float32)
  noise = counts / np.float32(peak) - source
  if gain != 1.0:
    noise *= np.float32(gain)
  return np.clip(img + noise, 0.0, 1.0)


@register("gaussian_noise")
class GaussianNoise(Degradation):
  """Additive white Gaussian noise; sigma in [0, 1] units (25/255 ~= 0.098), fixed or drawn per sample.

  The default range 0..0.2 covers blind denoising's usual 0..50/255 (Zhang et al. 2017, DnCNN).
  """

  DEFAULTS = dict(sigma=(0.0, 0.2), gray_prob=0.0)

  def __init__(self, opts: Options):
    self.sigma = opts.span("sigma", low=0.0)
    self.gray_prob = opts.probability("gray_prob")

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = uniform(rng, self.sigma)
    gray = self.gray_prob > 0 and rng.uniform() < self.gray_prob
    return add_gaussian(img, rng, sigma, gray)


@register("poisson_noise")
class PoissonNoise(Degradation):
  """Shot noise: variance = mean / peak (times gain^2). peak 255 is about one photon per 8-bit level at white;
  the default 10..255 runs from very noisy to mild."""

  DEFAULTS = dict(peak=(10.0, 255.0), gain=1.0, gray_prob=0.0)

  def __init__(self, opts: Options):
    self.peak = opts.span("peak", above=0.0)
    self.gain = opts.span("gain", low=0.0)
    self.gray_prob = opts.probability("gray_prob")

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    peak, gain = uniform(rng, self.peak), uniform(rng, self.gain)
    gray = self.gray_prob > 0 and rng.uniform() < self.gray_prob
    return add_poisson(img, rng, peak, gain, gray)
