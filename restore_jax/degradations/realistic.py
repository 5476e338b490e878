"""`realistic`: Real-ESRGAN's second-order degradation model.

Wang et al. 2021, "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data",
section 3: real photos went through a camera's blur and noise, resizing and JPEG, often more than once, so
the model applies the classical chain twice and ends with a 2-D sinc filter (ringing) and the resize to the
low-resolution size:

  1. blur (random kernel) -> random resize (up/down/keep) -> Gaussian or Poisson noise -> JPEG
  2. blur with probability second_blur_prob -> random resize relative to the output size -> noise
  3. in a random order: [resize to h / scale + final sinc filter] then JPEG, or JPEG then [resize + sinc]
  4. round to 8-bit levels.

Key names, units and defaults are those of Real-ESRGAN's options file `train_realesrgan_x4plus.yml` (noise
sigma in 8-bit levels, 1..30; poisson_scale is the noise gain; probabilities as there), so a recipe from
there carries over. Resampling follows its PyTorch F.interpolate (no antialiasing, bicubic a = -0.75) with a
mode drawn from area / bilinear / bicubic; area is exact area averaging. Where this differs from the
reference implementation: JPEG is libjpeg through Pillow at an integer quality (not a differentiable
re-implementation); filtering reflects the edge pixel ("symmetric"). The reference also degrades an
unsharp-masked copy of the target; here the target is used as it is (sharpening it is a loss-side choice).
"""

from __future__ import annotations

import math

import numpy as np

from restore_jax.degradations import filtering, kernels, resample
from restore_jax.degradations.base import Degradation, Options, check_divisible, odd_sizes
from restore_jax.degradations.blur import MixedKernels
from restore_jax.degradations.jpeg import compress
from restore_jax.degradations.noise import add_gaussian, luma
from restore_jax.degradations.registry import register

_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


def add_levels_poisson(img: np.ndarray, rng: np.random.Generator, gain: float, gray: bool) -> np.ndarray:
  """Real-ESRGAN's Poisson noise: round the image (or its luma) to 8-bit levels v, take the count of distinct
  levels rounded up to a power of 2 as the peak, and add gain * (Poisson(v * peak) / peak - v); clip."""
  source = luma(img) if gray else img
  levels = np.rint(np.clip(source, 0.0, 1.0) * 255.0).astype(np.uint8)
  distinct = np.count_nonzero(np.bincount(levels.ravel(), minlength=256))
  peak = float(2 ** math.ceil(math.log2(distinct)))
  noise = rng.poisson(levels * (peak / 255.0)).astype(np.float32) / np.float32(peak)
  noise -= levels.astype(np.float32) / np.float32(255.0)
  return np.clip(img + np.float32(gain) * noise, 0.0, 1.0)


class _Stage:
  """The keys of one degradation stage (suffix "" for the first, "2" for the second)."""

  def __init__(self, opts: Options, suffix: str):
    self.kernels = MixedKernels(opts, suffix)
    self.resize_prob = opts.weights(f"resize_prob{suffix}", 3)  # up, down, keep
    self.resize_range = opts.span(f"resize_range{suffix}", above=0.0)
    low, high = self.resize_range
    if not low <= 1.0 <= high:
      raise ValueError(f"{opts.key('resize_range' + suffix)} must include 1 (it is split into down and up), "
                       f"got {opts.raw('resize_range' + suffix)}.")
    self.gaussian_noise_prob = opts.probability(f"gaussian_noise_prob{suffix}")
    self.noise_range = opts.span(f"noise_range{suffix}", low=0.0)
    self.poisson_scale_range = opts.span(f"poisson_scale_range{suffix}", low=0.0)
    self.gray_noise_prob = opts.probability(f"gray_noise_prob{suffix}")
    self.jpeg_range = opts.span(f"jpeg_range{suffix}", low=1, high=100)

  def resize_factor(self, rng: np.random.Generator) -> float:
    kind = int(rng.choice(3, p=self.resize_prob))
    if kind == 0:
      return float(rng.uniform(1.0, self.resize_range[1]))
    if kind == 1:
      return float(rng.uniform(self.resize_range[0], 1.0))
    return 1.0

  def noise(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.uniform() < self.gaussian_noise_prob:
      sigma = rng.uniform(*self.noise_range) / 255.0
      return add_gaussian(img, rng, sigma, rng.uniform() < self.gray_noise_prob)
    gain = rng.uniform(*self.poisson_scale_range)
    return add_levels_poisson(img, rng, gain, rng.uniform() < self.gray_noise_prob)

  def jpeg(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low, high = self.jpeg_range
    return compress(img, int(round(rng.uniform(low, high))))


def _resize(img: np.ndarray, height: int, width: int, rng: np.random.Generator,
            modes: tuple[str, ...]) -> np.ndarray:
  mode = modes[int(rng.integers(len(modes)))]
  return resample.resize(img, height, width, mode, antialias=False)


@register("realistic")
class Realistic(Degradation):
  """Real-ESRGAN's second-order degradation to 1 / scale of the target's size (defaults: its x4plus recipe)."""

  DEFAULTS = dict(
      scale=4,
      # The first degradation process.
      resize_prob=(0.2, 0.7, 0.1), resize_range=(0.15, 1.5), gaussian_noise_prob=0.5, noise_range=(1.0, 30.0),
      poisson_scale_range=(0.05, 3.0), gray_noise_prob=0.4, jpeg_range=(30, 95),
      blur_kernel_size=(7, 21), kernel_list=kernels.KERNEL_TYPES, kernel_prob=_KERNEL_PROB, sinc_prob=0.1,
      blur_sigma=(0.2, 3.0), betag_range=(0.5, 4.0), betap_range=(1.0, 2.0),
      # The second degradation process.
      second_blur_prob=0.8, resize_prob2=(0.3, 0.4, 0.3), resize_range2=(0.3, 1.2), gaussian_noise_prob2=0.5,
      noise_range2=(1.0, 25.0), poisson_scale_range2=(0.05, 2.5), gray_noise_prob2=0.4, jpeg_range2=(30, 95),
      blur_kernel_size2=(7, 21), kernel_list2=kernels.KERNEL_TYPES, kernel_prob2=_KERNEL_PROB, sinc_prob2=0.1,
      blur_sigma2=(0.2, 1.5), betag_range2=(0.5, 4.0), betap_range2=(1.0, 2.0),
      # The final sinc filter, and how images are resized.
      final_sinc_prob=0.8, final_sinc_size=(7, 21), resize_modes=resample.METHODS,
  )

  def __init__(self, opts: Options):
    self.scale = opts.number("scale", low=1, integer=True)
    self.first = _Stage(opts, "")
    self.second = _Stage(opts, "2")
    self.second_blur_prob = opts.probability("second_blur_prob")
    self.final_sinc_prob = opts.probability("final_sinc_prob")
    self.final_sinc_sizes = odd_sizes(opts, "final_sinc_size", low=3)
    self.modes = opts.choices("resize_modes", resample.METHODS)
    self._path = opts.path

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out_h, out_w = check_divisible(img, self.scale, self._path)
    height, width = img.shape[:2]

    # The first degradation process.
    out = filtering.correlate(img, self.first.kernels.sample(rng))
    factor = self.first.resize_factor(rng)
    out = _resize(out, resample.scaled_size(height, factor), resample.scaled_size(width, factor), rng, self.modes)
    out = self.first.noise(out, rng)
    out = self.first.jpeg(out, rng)

    # The second degradation process.
    if rng.uniform() < self.second_blur_prob:
      out = filtering.correlate(out, self.second.kernels.sample(rng))
    factor = self.second.resize_factor(rng)
    out = _resize(out, max(1, int(height / self.scale * factor)), max(1, int(width / self.scale * factor)), rng,
                  self.modes)
    out = self.second.noise(out, rng)

    # The final sinc filter with the resize to the output size, and JPEG, in a random order.
    if rng.uniform() < self.final_sinc_prob:
      size = int(rng.choice(self.final_sinc_sizes))
      sinc = kernels.sinc(size, float(rng.uniform(math.pi / 3, math.pi)))
    else:
      sinc = None
    if rng.uniform() < 0.5:
      out = _resize(out, out_h, out_w, rng, self.modes)
      out = out if sinc is None else filtering.correlate(out, sinc)
      out = self.second.jpeg(out, rng)
    else:
      out = self.second.jpeg(out, rng)
      out = _resize(out, out_h, out_w, rng, self.modes)
      out = out if sinc is None else filtering.correlate(out, sinc)
    return np.round(np.clip(out, 0.0, 1.0) * 255.0) / np.float32(255.0)
