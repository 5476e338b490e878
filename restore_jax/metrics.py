"""Image quality metrics with the super-resolution literature's conventions.

Written down once here and used everywhere (training evals, evaluate.py,
bench): images come in as float32 in [0, 1], are rounded to 8-bit levels
(the numbers a saved PNG would hold), optionally reduced to the BT.601 luma
(Y) channel, cropped by `crop_border` pixels on every side (= the scale
factor for SR, where the border cannot be reconstructed), and compared on the
0..255 scale. See DESIGN.md section 4.

Every metric takes the same keywords: crop_border, y_channel, round_to_uint8.
"""

import functools

import jax
import jax.numpy as jnp

# BT.601 luma for RGB in [0, 1], giving Y in levels [16, 235]; the constants
# of MATLAB's rgb2ycbcr, used by the SR literature (and skimage.color.rgb2ycbcr).
_Y_OFFSET = 16.0
_Y_FROM_RGB = (65.481, 128.553, 24.966)

_PEAK = 255.0


def to_uint8_levels(x: jax.Array) -> jax.Array:
  """round(clip(x, 0, 1) * 255) as float32: the 8-bit levels of an image in [0, 1]."""
  return jnp.round(jnp.clip(x, 0.0, 1.0) * _PEAK).astype(jnp.float32)


def rgb_to_y(x: jax.Array) -> jax.Array:
  """BT.601 luma of RGB in [0, 1] (last axis), in levels [16, 235], channel kept (..., 1).

  Y is not rounded, as in BasicSR's evaluation.
  """
  if x.shape[-1] != 3:
    raise ValueError(f"rgb_to_y needs 3 RGB channels on the last axis, got shape {x.shape}.")
  weights = jnp.asarray(_Y_FROM_RGB, dtype=jnp.float32)
  return (_Y_OFFSET + jnp.tensordot(x.astype(jnp.float32), weights, axes=1))[..., None]


def prepare_for_metric(
    x: jax.Array, *, crop_border: int, y_channel: bool, round_to_uint8: bool) -> jax.Array:
  """NHWC or HWC in [0, 1] -> the same layout in 0..255 levels, as every metric compares.

  Clip (and round unless round_to_uint8=False) to 8-bit levels, take Y if
  asked, then drop `crop_border` pixels from each side of H and W.
  """
  if x.ndim not in (3, 4):
    raise ValueError(f"Expected an HWC image or an NHWC batch, got shape {x.shape}.")
  if round_to_uint8:
    levels = to_uint8_levels(x)
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


@functools.partial(jax.jit, static_argnames=("crop_border", "y_channel", "round_to_uint8"))
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
  if x.shape != y.shape:
    raise ValueError(f"psnr needs images of the same shape, got {x.shape} and {y.shape}.")
  options = dict(crop_border=crop_border, y_channel=y_channel, round_to_uint8=round_to_uint8)
  x_levels = prepare_for_metric(x, **options)
  y_levels = prepare_for_metric(y, **options)
  mse = jnp.mean(jnp.square(x_levels - y_levels), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(_PEAK**2 / mse)


# SSIM and MS-SSIM go here, built on prepare_for_metric with the same keywords
# (crop_border, y_channel, round_to_uint8) and the constants of DESIGN.md
# section 4 (11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03; MS-SSIM
# over 5 scales with weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333).
