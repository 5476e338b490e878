"""Blur families: Gaussian (fixed or random sigma, isotropic or rotated anisotropic), generalized Gaussian,
plateau, 2-D sinc (ringing), motion, resize blur, and Real-ESRGAN's random mix of kernels.

Sources: the image translator of Liu Shiqiang ("GAN Network Image Translator: Image Restoration and
Enhancement", code lsqpku/img2img) blurs faces with a Gaussian, a random Gaussian and a resize blur (down,
then back up) and mixes them in training; the lecture "Image restoration with GANs" lists blur first among
degradations; the kernel shapes and their ranges follow Real-ESRGAN (Wang et al. 2021, section 3.1).

All of them keep the image size. Filtering is numpy/scipy on the CPU (restore_jax.degradations.filtering):
per-sample JAX calls (dm-pix's `gaussian_blur`) would pay a dispatch and a compilation per kernel size in
the input pipeline, see benchmarks/degradations.md.
"""

from __future__ import annotations

import math

import numpy as np

from restore_jax.degradations import filtering, kernels, resample
from restore_jax.degradations.base import Degradation, Options, odd_sizes, uniform
from restore_jax.degradations.registry import register

_SIGMA = dict(above=0.0, high=50.0)


def _filtered(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Filters and clips to [0, 1] (a sinc's negative lobes overshoot; others only by rounding)."""
  return np.clip(filtering.correlate(img, kernel), 0.0, 1.0)


class _ShapedBlur(Degradation):
  """Shared keys of the kernel-shaped blurs: sigma, anisotropy, kernel size."""

  def __init__(self, opts: Options):
    self.sigma = opts.span("sigma", **_SIGMA)
    self.anisotropic_prob = opts.probability("anisotropic_prob")
    auto = opts.span("kernel_size", low=0, high=101, integer=True) == (0, 0)
    self.sizes = () if auto else odd_sizes(opts, "kernel_size")

  def _draw_shape(self, rng: np.random.Generator) -> tuple[int, float, float, float]:
    """(size, sigma_x, sigma_y, angle); anisotropic kernels draw both sigmas and an angle in [-pi, pi]."""
    sigma_x = uniform(rng, self.sigma)
    if self.anisotropic_prob > 0 and rng.uniform() < self.anisotropic_prob:
      sigma_y = uniform(rng, self.sigma)
      angle = float(rng.uniform(-math.pi, math.pi))
    else:
      sigma_y, angle = sigma_x, 0.0
    if self.sizes:
      size = self.sizes[0] if len(self.sizes) == 1 else int(rng.choice(self.sizes))
    else:
      size = 2 * max(1, math.ceil(3.0 * max(sigma_x, sigma_y))) + 1  # 3 sigma each side.
    return size, sigma_x, sigma_y, angle


@register("gaussian_blur")
class GaussianBlur(_ShapedBlur):
  """Gaussian blur: a fixed sigma (sigma = 1.5) or a random one per sample (sigma = (0.2, 3.0)).

  Isotropic kernels are separable (two 1-D passes); with anisotropic_prob > 0 some kernels get two sigmas and
  a random angle. kernel_size (0, 0) (or 0) sizes each kernel to reach 3 sigma on each side; otherwise sizes are
  drawn among the odd sizes of the range, as Real-ESRGAN does (7..21).
  """

  DEFAULTS = dict(sigma=(0.2, 3.0), anisotropic_prob=0.0, kernel_size=(0, 0))

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size, sigma_x, sigma_y, angle = self._draw_shape(rng)
    if sigma_x == sigma_y:  # Isotropic: separable, skip the SVD.
      taps = kernels.gaussian_taps(sigma_x, size // 2)
      return np.clip(filtering.correlate_separable(img, [(taps, taps)]), 0.0, 1.0)
    return _filtered(img, kernels.gaussian(size, sigma_x, sigma_y, angle))


@register("generalized_gaussian_blur")
class GeneralizedGaussianBlur(_ShapedBlur):
  """Real-ESRGAN's generalized Gaussian kernel exp(-1/2 q^beta), beta uniform in `beta`."""

  DEFAULTS = dict(sigma=(0.2, 3.0), anisotropic_prob=0.5, beta=(0.5, 4.0), kernel_size=(7, 21))

  def __init__(self, opts: Options):
    super().__init__(opts)
    self.beta = opts.span("beta", above=0.0, high=20.0)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size, sigma_x, sigma_y, angle = self._draw_shape(rng)
    kernel = kernels.generalized_gaussian(size, sigma_x, sigma_y, angle, uniform(rng, self.beta))
    return _filtered(img, kernel)


@register("plateau_blur")
class PlateauBlur(_ShapedBlur):
  """Real-ESRGAN's plateau kernel 1 / (1 + q^beta), beta uniform in `beta`."""

  DEFAULTS = dict(sigma=(0.2, 3.0), anisotropic_prob=0.5, beta=(1.0, 2.0), kernel_size=(7, 21))

  def __init__(self, opts: Options):
    super().__init__(opts)
    self.beta = opts.span("beta", above=0.0, high=20.0)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size, sigma_x, sigma_y, angle = self._draw_shape(rng)
    kernel = kernels.plateau(size, sigma_x, sigma_y, angle, uniform(rng, self.beta))
    return _filtered(img, kernel)


@register("sinc_blur")
class SincBlur(Degradation):
  """2-D sinc filter: a sharp circular low-pass that leaves ringing and overshoot near edges (Real-ESRGAN,
  section 3.1). `cutoff` in radians per pixel; pi keeps everything."""

  DEFAULTS = dict(cutoff=(math.pi / 3, math.pi), kernel_size=(7, 21))

  def __init__(self, opts: Options):
    self.cutoff = opts.span("cutoff", above=0.0, high=math.pi)
    self.sizes = odd_sizes(opts, "kernel_size")

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = int(rng.choice(self.sizes))
    return _filtered(img, kernels.sinc(size, uniform(rng, self.cutoff)))


@register("motion_blur")
class MotionBlur(Degradation):
  """Camera shake along a straight line: a streak of `length` pixels at an `angle` in degrees."""

  DEFAULTS = dict(length=(3.0, 15.0), angle=(0.0, 180.0))

  def __init__(self, opts: Options):
    self.length = opts.span("length", low=0.0, high=200.0)
    self.angle = opts.span("angle")

  def kernel(self, rng: np.random.Generator) -> np.ndarray:
    length = uniform(rng, self.length)
    return kernels.motion(length, math.radians(uniform(rng, self.angle)))

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _filtered(img, self.kernel(rng))


@register("resize_blur")
class ResizeBlur(Degradation):
  """Down by `factor`, then back up to the original size, each with a method drawn from `methods`
  (Pillow's antialiased resampling, see restore_jax.degradations.resample)."""

  DEFAULTS = dict(factor=(1.5, 4.0), methods=resample.METHODS)

  def __init__(self, opts: Options):
    self.factor = opts.span("factor", low=1.0)
    self.methods = opts.choices("methods", resample.METHODS)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = img.shape[:2]
    factor = uniform(rng, self.factor)
    small_h, small_w = max(1, round(height / factor)), max(1, round(width / factor))
    down, up = (self.methods[int(rng.integers(len(self.methods)))] for _ in range(2))
    small = resample.resize(img, small_h, small_w, down)
    return np.clip(resample.resize(small, height, width, up), 0.0, 1.0)


class MixedKernels:
  """Real-ESRGAN's random blur kernel: a sinc with probability sinc_prob, else one of kernel_list drawn with
  kernel_prob; the size is drawn among the odd sizes of kernel_size (7..21 in Real-ESRGAN)."""

  def __init__(self, opts: Options, suffix: str = ""):
    self.types = opts.choices(f"kernel_list{suffix}", kernels.KERNEL_TYPES)
    self.probs = opts.weights(f"kernel_prob{suffix}", len(self.types))
    self.sinc_prob = opts.probability(f"sinc_prob{suffix}")
    self.sigma = opts.span(f"blur_sigma{suffix}", **_SIGMA)
    self.betag = opts.span(f"betag_range{suffix}", above=0.0, high=20.0)
    self.betap = opts.span(f"betap_range{suffix}", above=0.0, high=20.0)
    self.sizes = odd_sizes(opts, f"blur_kernel_size{suffix}", low=3)

  def sample(self, rng: np.random.Generator) -> np.ndarray:
    size = int(rng.choice(self.sizes))
    if rng.uniform() < self.sinc_prob:
      return kernels.sinc(size, kernels.random_sinc_cutoff(rng, size))
    kind = self.types[int(rng.choice(len(self.types), p=self.probs))]
    return kernels.random_mixed(rng, kind, size, self.sigma, self.betag, self.betap)


@register("mixed_blur")
class MixedBlur(Degradation):
  """Real-ESRGAN's first-stage blur on its own: its kernel mix, sizes, sigma and beta ranges as defaults
  (train_realesrgan_x4plus.yml: kernel_list, kernel_prob, sinc_prob 0.1, blur_sigma [0.2, 3],
  betag_range [0.5, 4], betap_range [1, 2], sizes 7..21)."""

  DEFAULTS = dict(kernel_list=kernels.KERNEL_TYPES, kernel_prob=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
                  sinc_prob=0.1, blur_sigma=(0.2, 3.0), betag_range=(0.5, 4.0), betap_range=(1.0, 2.0),
                  blur_kernel_size=(7, 21))

  def __init__(self, opts: Options):
    self.kernels = MixedKernels(opts)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _filtered(img, self.kernels.sample(rng))
