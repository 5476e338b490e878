"""Image quality metrics with the super-resolution literature's conventions.

Written down once here and used everywhere (training evals, evaluate.py,
bench). Every metric takes the same keywords (crop_border, y_channel,
round_to_uint8), an NHWC batch (-> one value per image, shape (N,)) or a single
HWC image (-> a scalar), float32 in [0, 1], and is jittable (the keywords are
static). Before comparing, both images are prepared the same way
(the conventions of the super-resolution literature):

1. clip to [0, 1] and, with round_to_uint8 (the default), round to 8-bit
   levels: the numbers a saved PNG would hold;
2. with y_channel, reduce to BT.601 luma, Y = 16 + 65.481 R + 128.553 G +
   24.966 B for RGB in [0, 1], in levels [16, 235]. With round_to_uint8, Y is
   computed from the 8-bit RGB and itself rounded to an 8-bit level (ties up),
   which is what MATLAB's rgb2ycbcr does to a uint8 image and so what the
   published tables used. It matters: bicubic x4 on Set5 (4-px crop) scores
   28.4189 dB with the rounded Y, the published 28.42, but 28.4314 dB with an
   unrounded Y;
3. drop `crop_border` pixels from every side (the SR scale: the border cannot
   be reconstructed);
4. compare on the 0..255 scale (data range 255).

SSIM is Wang et al. (2004): 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, biased (population) local statistics, 'valid' filtering (no
padding); the SSIM map is averaged per channel, then over channels. It agrees
with skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255).

MS-SSIM is Wang, Simoncelli & Bovik (2003) in tf.image.ssim_multiscale's
formulation: 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
2x2 average pooling between scales (an odd side first repeats its last
row/column), contrast-structure at scales 1-4 and full SSIM at scale 5, each
clipped at 0 before the power. The coarsest scale must still hold the 11-px
window, so images need at least MS_SSIM_MIN_SIZE = 161 pixels per side (after
cropping).

The SSIM machinery itself (Gaussian window, local statistics, K1/K2, the 2x2
pooling between scales) takes the data range, window size and sigma as
arguments and knows nothing of 8-bit levels: ssim_maps and ms_ssim_terms are
shared with the MS-SSIM training loss (restore_jax.losses.ssim), which calls
them on unrounded [0, 1] images with data range 1.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

# BT.601 luma for RGB in [0, 1], giving Y in levels [16, 235]; the constants
# of MATLAB's rgb2ycbcr, used by the SR literature (and skimage.color.rgb2ycbcr).
_Y_OFFSET = 16.0
_Y_FROM_RGB = (65.481, 128.553, 24.966)
# The same weights in thousandths of a level per 8-bit level, for the exact
# integer path: Y = 16 + (65481 R + 128553 G + 24966 B) / 255000.
_Y_FROM_RGB_MILLI = (65481, 128553, 24966)
_Y_DIVISOR_MILLI = 255_000

_PEAK = 255.0

# SSIM constants of Wang et al. (2004), "Image quality assessment: from error
# visibility to structural similarity".
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03

# MS-SSIM weights per scale, finest first: Wang, Simoncelli & Bovik (2003),
# "Multiscale structural similarity for image quality assessment" (and the
# default power_factors of tf.image.ssim_multiscale).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_min_size(num_scales: int, window_size: int) -> int:
  """The smallest image side on which `num_scales` scales of a `window_size` window fit.

  Each of the num_scales - 1 halvings rounds up, so the coarsest side is
  ceil(side / 2**(num_scales - 1)), and it must be >= the window:
  side >= 2**(num_scales - 1) * (window_size - 1) + 1.
  """
  return 2**(num_scales - 1) * (window_size - 1) + 1


# 16 * (11 - 1) + 1 = 161.
MS_SSIM_MIN_SIZE = ms_ssim_min_size(len(MS_SSIM_WEIGHTS), SSIM_WINDOW)


def to_uint8_levels(x: jax.Array) -> jax.Array:
  """round(clip(x, 0, 1) * 255) as float32: the 8-bit levels of an image in [0, 1]."""
  return jnp.round(jnp.clip(x, 0.0, 1.0) * _PEAK).astype(jnp.float32)


def rgb_to_y(x: jax.Array) -> jax.Array:
  """BT.601 luma of RGB in [0, 1] (last axis), in levels [16, 235], channel kept (..., 1).

  Not rounded; prepare_for_metric rounds it (from 8-bit RGB) when asked.
  """
  _check_rgb(x)
  weights = jnp.asarray(_Y_FROM_RGB, dtype=jnp.float32)
  return (_Y_OFFSET + jnp.tensordot(x.astype(jnp.float32), weights, axes=1))[..., None]


def rgb_levels_to_y_levels(levels: jax.Array) -> jax.Array:
  """8-bit RGB levels (last axis) -> 8-bit Y levels, (..., 1) float32, as MATLAB's rgb2ycbcr on uint8.

  Computed in exact integer arithmetic so that rounding never depends on float
  error; a Y exactly halfway between two levels rounds up (MATLAB's round).
  """
  _check_rgb(levels)
  weights = jnp.asarray(_Y_FROM_RGB_MILLI, dtype=jnp.int32)
  # At most 219000 * 255 < 2**31: no overflow.
  weighted = jnp.tensordot(levels.astype(jnp.int32), weights, axes=1)
  rounded = (weighted + _Y_DIVISOR_MILLI // 2) // _Y_DIVISOR_MILLI
  return (int(_Y_OFFSET) + rounded).astype(jnp.float32)[..., None]


def _check_rgb(x: jax.Array) -> None:
  if x.shape[-1] != 3:
    raise ValueError(
        f"The Y channel needs 3 RGB channels on the last axis, got shape {x.shape}; "
        "pass y_channel=False for gray or other images.")


def prepare_for_metric(
    x: jax.Array, *, crop_border: int, y_channel: bool, round_to_uint8: bool) -> jax.Array:
  """NHWC or HWC in [0, 1] -> the same layout in 0..255 levels, as every metric compares.

  Clip (and round unless round_to_uint8=False) to 8-bit levels, take Y if
  asked (rounded to a level too when rounding), then drop `crop_border`
  pixels from each side of H and W.
  """
  if x.ndim not in (3, 4):
    raise ValueError(f"Expected an HWC image or an NHWC batch, got shape {x.shape}.")
  if round_to_uint8:
    levels = to_uint8_levels(x)
    if y_channel:
      levels = rgb_levels_to_y_levels(levels)
  else:
    levels = jnp.clip(x.astype(jnp.float32), 0.0, 1.0) * _PEAK
    if y_channel:
      levels = rgb_to_y(levels / _PEAK)
  if crop_border:
    height, width = levels.shape[-3], levels.shape[-2]
    if crop_border < 0 or 2 * crop_border >= min(height, width):
      raise ValueError(
          f"crop_border={crop_border} leaves nothing of a {height}x{width} image; "
          "use a border smaller than half the image side.")
    levels = levels[..., crop_border:height - crop_border, crop_border:width - crop_border, :]
  return levels


def _prepare_pair(name, x, y, options):
  if x.shape != y.shape:
    raise ValueError(f"{name} needs images of the same shape, got {x.shape} and {y.shape}.")
  return prepare_for_metric(x, **options), prepare_for_metric(y, **options)


_metric = functools.partial(jax.jit, static_argnames=("crop_border", "y_channel", "round_to_uint8"))


@_metric
def psnr(
    x: jax.Array,
    y: jax.Array,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    round_to_uint8: bool = True,
) -> jax.Array:
  """Peak signal-to-noise ratio in dB, peak 255 on 8-bit levels, one value per image.

  Args:
    x, y: images in [0, 1], both (N, H, W, C) -> (N,), or both (H, W, C) -> ().
    crop_border: pixels removed from every side before comparing (the SR scale).
    y_channel: compare the BT.601 Y channel instead of RGB (needs C = 3).
    round_to_uint8: round to 8-bit levels first, as a saved image would be.

  Returns:
    PSNR per image; +inf where the two (rounded) images are identical.
  """
  options = dict(crop_border=crop_border, y_channel=y_channel, round_to_uint8=round_to_uint8)
  x_levels, y_levels = _prepare_pair("psnr", x, y, options)
  mse = jnp.mean(jnp.square(x_levels - y_levels), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(_PEAK**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """The 1-D factor of the size x size Gaussian window (MATLAB's fspecial), float64 summing to 1.

  fspecial's 2-D window is exp(-(i^2 + j^2) / (2 sigma^2)) normalised, which
  is the outer product of this normalised 1-D window with itself.
  """
  offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
  window = np.exp(-offsets**2 / (2 * sigma**2))
  return window / window.sum()


# Output pixels per block of the banded matrix product in _filter_last_axis.
_FILTER_BLOCK = 32


def _band_matrix(block: int, window: np.ndarray) -> np.ndarray:
  """(block + len(window) - 1, block) matrix whose column j holds the window at rows j, j+1, ..."""
  band = np.zeros((block + len(window) - 1, block), np.float64)
  for column in range(block):
    band[column:column + len(window), column] = window
  return band


def _banded_filter(images: jax.Array, window: np.ndarray) -> jax.Array:
  """'Valid' 1-D filter along the last axis, as blocked banded matrix products.

  Outputs are cut into blocks of _FILTER_BLOCK; a block reads its own inputs
  and the len(window) - 1 after them, so it is one small matmul. On CPU this
  runs ~10x faster than lax.conv on one-channel planes and compiles ~2x faster
  than summing shifted slices, which matters both for whole 2040x1356 DIV2K
  images and for the many shapes a test suite compiles.
  """
  size = images.shape[-1]
  out_size = size - (len(window) - 1)
  num_blocks = -(-out_size // _FILTER_BLOCK)
  padding = num_blocks * _FILTER_BLOCK + len(window) - 1 - size
  images = jnp.pad(images, [(0, 0)] * (images.ndim - 1) + [(0, padding)])
  starts = np.arange(num_blocks)[:, None] * _FILTER_BLOCK
  blocks = images[..., starts + np.arange(_FILTER_BLOCK + len(window) - 1)]
  # The window is rounded to the images' dtype once, then placed in the band.
  band = jnp.asarray(_band_matrix(_FILTER_BLOCK, window.astype(images.dtype)), images.dtype)
  # HIGHEST: no TF32/bf16 passes on GPU/TPU; these are 0..255-scale moments.
  filtered = jnp.matmul(blocks, band, precision=jax.lax.Precision.HIGHEST)
  return filtered.reshape(*filtered.shape[:-2], -1)[..., :out_size]


@functools.lru_cache(maxsize=None)
def _valid_filter(window: tuple[float, ...]):
  """_banded_filter with `window`, with the filter's own transpose as its gradient.

  The filter is linear, and its transpose is the 'full' filter with the
  reversed window: pad the cotangent with len(window) - 1 zeros on both sides
  and filter it again. That costs one more forward pass, where autodiff of
  the gather in _banded_filter would scatter-add (~2x slower on CPU). Being a
  custom_vjp, it supports reverse-mode autodiff (grad) only, not jvp.
  """
  forward_window, reversed_window = np.asarray(window), np.asarray(window[::-1])

  @jax.custom_vjp
  def apply(images):
    return _banded_filter(images, forward_window)

  def apply_forward(images):
    return apply(images), None

  def apply_backward(_, cotangent):
    overlap = len(window) - 1
    padded = jnp.pad(cotangent, [(0, 0)] * (cotangent.ndim - 1) + [(overlap, overlap)])
    return (_banded_filter(padded, reversed_window),)

  apply.defvjp(apply_forward, apply_backward)
  return apply


def _filter_last_axis(images: jax.Array, window: np.ndarray) -> jax.Array:
  """'Valid' 1-D filter of the last axis by `window` (float64 numpy), differentiable."""
  return _valid_filter(tuple(window.tolist()))(images)


def _gaussian_filter_valid(images: jax.Array, window: np.ndarray) -> jax.Array:
  """Local Gaussian means of NHWC images, 'valid' positions only: (N, H-k+1, W-k+1, C).

  The 2-D window is separable: filter H, then W, each moved to the last axis.
  """
  for axis in (1, 2):
    images = jnp.moveaxis(_filter_last_axis(jnp.moveaxis(images, axis, -1), window), -1, axis)
  return images


def ssim_maps(
    x: jax.Array,
    y: jax.Array,
    *,
    data_range: float,
    window_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> tuple[jax.Array, jax.Array]:
  """Luminance and contrast-structure maps of NHWC images, 'valid' window positions only.

  The metrics call it on 0..255 levels (data_range 255), the MS-SSIM loss on
  [0, 1] images (data_range 1): C1 = (K1 data_range)^2, C2 = (K2 data_range)^2.
  Both maps are smooth in x and y (no square roots; the denominators are at
  least C1 and C2), so the loss can differentiate through them.

  Variances come from E[x^2] - E[x]^2, which in float32 loses precision on
  0..255 values; each image is first centred on its own mean (variances and
  covariance do not change), which keeps the squares small.
  """
  c1 = (_K1 * data_range)**2
  c2 = (_K2 * data_range)**2
  x_shift = jnp.mean(x, axis=(1, 2), keepdims=True)
  y_shift = jnp.mean(y, axis=(1, 2), keepdims=True)
  x_centred, y_centred = x - x_shift, y - y_shift
  # One filter call for all five local moments.
  moments = jnp.concatenate(
      [x_centred, y_centred, x_centred * x_centred, y_centred * y_centred, x_centred * y_centred],
      axis=0)
  window = gaussian_window(window_size, sigma)
  mean_x, mean_y, mean_xx, mean_yy, mean_xy = jnp.split(
      _gaussian_filter_valid(moments, window), 5, axis=0)
  var_x = mean_xx - mean_x * mean_x
  var_y = mean_yy - mean_y * mean_y
  cov_xy = mean_xy - mean_x * mean_y
  mu_x, mu_y = mean_x + x_shift, mean_y + y_shift
  luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
  contrast_structure = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
  return luminance, contrast_structure


def _as_batch(levels: jax.Array) -> jax.Array:
  return levels if levels.ndim == 4 else levels[None]


def _check_window_fits(name: str, levels: jax.Array, minimum: int) -> None:
  height, width = levels.shape[-3], levels.shape[-2]
  if min(height, width) < minimum:
    hint = " Use ssim for smaller images." if name == "ms_ssim" else ""
    raise ValueError(
        f"{name} needs images at least {minimum}x{minimum} pixels after crop_border "
        f"({SSIM_WINDOW}x{SSIM_WINDOW} window), got {height}x{width}.{hint}")


@_metric
def ssim(
    x: jax.Array,
    y: jax.Array,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    round_to_uint8: bool = True,
) -> jax.Array:
  """Structural similarity (Wang et al. 2004), one value per image, 1 for identical images.

  Args and shapes as psnr. Each side must be at least 11 pixels after cropping.
  """
  options = dict(crop_border=crop_border, y_channel=y_channel, round_to_uint8=round_to_uint8)
  x_levels, y_levels = _prepare_pair("ssim", x, y, options)
  _check_window_fits("ssim", x_levels, SSIM_WINDOW)
  luminance, contrast_structure = ssim_maps(_as_batch(x_levels), _as_batch(y_levels),
                                            data_range=_PEAK)
  per_image = jnp.mean(luminance * contrast_structure, axis=(1, 2, 3))
  return per_image if x.ndim == 4 else per_image[0]


def halve(images: jax.Array) -> jax.Array:
  """2x2 average pooling of NHWC; an odd side first repeats its last row/column (as tf)."""
  _, height, width, _ = images.shape
  images = jnp.pad(images, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
  batch, height, width, channels = images.shape
  blocks = images.reshape(batch, height // 2, 2, width // 2, 2, channels)
  return jnp.mean(blocks, axis=(2, 4))


def ms_ssim_terms(
    x: jax.Array,
    y: jax.Array,
    *,
    num_scales: int,
    data_range: float,
    window_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> jax.Array:
  """The per-scale factors of MS-SSIM, before clipping and powers: (N, C, num_scales).

  Scale 1 is the input, each next one its halve(); factor s is the mean
  contrast-structure of scale s, except at the coarsest scale, where it is the
  mean SSIM (luminance times contrast-structure), as in Wang, Simoncelli &
  Bovik (2003). The caller checks that the window fits the coarsest scale
  (ms_ssim_min_size) and combines the factors with its weights.
  """
  options = dict(data_range=data_range, window_size=window_size, sigma=sigma)
  factors = []
  for index in range(num_scales):
    if index > 0:
      x, y = halve(x), halve(y)
    luminance, contrast_structure = ssim_maps(x, y, **options)
    if index == num_scales - 1:
      factors.append(jnp.mean(luminance * contrast_structure, axis=(1, 2)))
    else:
      factors.append(jnp.mean(contrast_structure, axis=(1, 2)))
  return jnp.stack(factors, axis=-1)


@_metric
def ms_ssim(
    x: jax.Array,
    y: jax.Array,
    *,
    crop_border: int = 0,
    y_channel: bool = False,
    round_to_uint8: bool = True,
) -> jax.Array:
  """Multi-scale SSIM over 5 scales, one value per image, 1 for identical images.

  Args and shapes as psnr. Each side must be at least MS_SSIM_MIN_SIZE (161)
  pixels after cropping, so the 11-px window fits the coarsest scale.
  """
  options = dict(crop_border=crop_border, y_channel=y_channel, round_to_uint8=round_to_uint8)
  x_levels, y_levels = _prepare_pair("ms_ssim", x, y, options)
  _check_window_fits("ms_ssim", x_levels, MS_SSIM_MIN_SIZE)
  factors = ms_ssim_terms(_as_batch(x_levels), _as_batch(y_levels),
                          num_scales=len(MS_SSIM_WEIGHTS), data_range=_PEAK)
  per_channel = 1.0
  for index, weight in enumerate(MS_SSIM_WEIGHTS):
    # Per channel (N, C); clipped at 0 as tf does, so a negative factor gives 0.
    per_channel = per_channel * jnp.power(jnp.maximum(factors[..., index], 0.0), weight)
  per_image = jnp.mean(per_channel, axis=-1)
  return per_image if x.ndim == 4 else per_image[0]
