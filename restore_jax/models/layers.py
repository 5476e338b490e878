"""What the image-to-image networks share: option checks, normalisation by name, the [0, 1] <-> [-1, 1] maps.

The conventions follow pix2pix (Isola et al. 2017) and DCGAN (Radford et al. 2016), so weights trained with
their PyTorch code map onto these modules one to one.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from restore_jax import task as task_lib
from restore_jax.degradations.noise import BT601  # The luma of the gray input the grayscale degradation makes.

NORMS = ("batch", "instance", "none")

# PyTorch's BatchNorm2d defaults: the running statistics move 0.1 towards each batch's (flax's `momentum` is the
# weight of the old value, so 0.9), and eps 1e-5 (flax's default is 1e-6).
BATCH_NORM_MOMENTUM = 0.9
NORM_EPSILON = 1e-5

# "All weights were initialized from a zero-centered Normal distribution with standard deviation 0.02"
# (Radford et al. 2016, section 4); pix2pix initialises the same way (Isola et al. 2017, appendix 6.2).
DCGAN_KERNEL_INIT = nn.initializers.normal(stddev=0.02)


def check_choice(value: Any, allowed: Sequence[Any], key: str) -> None:
  """Raises ValueError naming the config key when `value` is not one of `allowed`."""
  if value not in allowed:
    raise ValueError(f"{key} must be one of {list(allowed)}, got {value!r}.")


def check_at_least(value: Any, minimum: int, key: str) -> None:
  """Raises ValueError naming the config key unless `value` is an int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}.")


def check_divisible(x: jax.Array, factor: int, why: str) -> None:
  """NHWC input whose height and width are multiples of `factor` (each stride-2 layer halves them exactly)."""
  if x.ndim != 4:
    raise ValueError(f"Expected an NHWC batch of images, got shape {x.shape}.")
  if x.shape[1] % factor or x.shape[2] % factor:
    raise ValueError(
        f"Input height and width must be multiples of {factor} ({why}), got {x.shape[1]}x{x.shape[2]}; "
        "change the crop size or the network depth.")


def normalization(norm: str, *, train: bool, dtype: Any, name: str) -> Callable[[jax.Array], jax.Array]:
  """The normalisation layer called `norm`, created in the calling module's scope.

  "batch" is nn.BatchNorm with PyTorch's defaults: batch statistics with train=True (and the running averages
  in `batch_stats` updated), running averages otherwise. The running variance averages the biased batch variance
  (the one both frameworks normalise with) where PyTorch averages the unbiased one, a factor m / (m - 1) apart for
  m values per channel: noticeable only where m is small, e.g. a U-Net's innermost levels with a small batch.
  "instance" normalises every image and channel on its own, without a learned scale or shift, like PyTorch's
  InstanceNorm2d default and pix2pix's "instance" option; as it never mixes images it suits a critic trained with
  a gradient penalty (Gulrajani et al. 2017, section 4).
  """
  if norm == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=BATCH_NORM_MOMENTUM, epsilon=NORM_EPSILON,
                        dtype=dtype, name=name)
  if norm == "instance":
    return nn.InstanceNorm(epsilon=NORM_EPSILON, use_scale=False, use_bias=False, dtype=dtype, name=name)
  return lambda h: h


def lrelu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, negative_slope=0.2)


def to_signed(x: jax.Array) -> jax.Array:
  """[0, 1] -> [-1, 1], the range pix2pix and DCGAN feed their networks."""
  return 2.0 * x - 1.0


def tanh_to_unit(t: jax.Array) -> jax.Array:
  """A pre-tanh output -> float32 in [0, 1], the range at every boundary of this package."""
  return (jnp.tanh(t.astype(jnp.float32)) + 1.0) / 2.0


def residual_output(x: jax.Array, h: jax.Array, out_ch: int, colour_downscale: int = 1) -> jax.Array:
  """out = image + tanh(h): a generator that predicts only a correction of its input (global residual learning,
  as in VDSR, Kim et al. 2016).

  The image corrected is the input's first out_ch channels (a mask, when the task has one, comes after them), or
  its one gray channel repeated (colorization). For colorization the correction's own luma is taken out of it, so
  the output keeps the input's BT.601 luma exactly and the network only chooses colour:
  the gray image already is the photo's luminance, as colorization networks predict Lab's ab channels from L
  (Zhang et al. 2016, "Colorful Image Colorization"; pix2pix's colorization data mode does the same). Where gray
  plus colour would leave the RGB cube, the colour is desaturated just enough to fit (see `_gamut_scale`) rather
  than clipped per channel, which would change the pixel's luma and hue.

  `colour_downscale` f > 1 (colorization only) keeps the colour correction at 1/f of the resolution: averaged over
  f x f blocks, then bilinearly upsampled. Zhang et al. 2016 predict ab at a quarter of the input's resolution:
  colour varies slowly where luma carries the detail, and a colour correction with no fine detail cannot add the
  pixel-scale tint noise that a young network's full-resolution output has.
  """
  channels = x.shape[-1]
  correction = jnp.tanh(h.astype(jnp.float32))
  if colour_downscale < 1:
    raise ValueError(f"generator.colour_downscale must be >= 1, got {colour_downscale}.")
  if channels >= out_ch:
    if colour_downscale != 1:
      raise ValueError("generator.colour_downscale applies to colorization (one gray channel in, three out) only; "
                       f"this generator has {channels} input and {out_ch} output channels: set it to 1.")
    image = x[..., :out_ch].astype(jnp.float32)
  elif channels == 1 and out_ch == 3:
    image = jnp.repeat(x.astype(jnp.float32), out_ch, axis=-1)
    if colour_downscale > 1:
      correction = _low_resolution(correction, colour_downscale)
    correction = correction - jnp.tensordot(correction, jnp.asarray(BT601), axes=1)[..., None]
    correction = correction * _gamut_scale(image, correction)
  else:
    raise ValueError(f"generator.input_residual needs the input to hold an image of generator.out_ch={out_ch} "
                     f"channels (or a gray one for 3 channels out), got {channels} channels; turn it off.")
  return image + correction


def _gamut_scale(gray: jax.Array, colour: jax.Array) -> jax.Array:
  """The largest t in [0, 1] per pixel with gray + t * colour inside [0, 1] on every channel, shape (..., 1).

  `colour` has no luma, so gray + t * colour keeps the pixel's luma and hue for every t; only saturation drops.
  """
  headroom = jnp.where(colour > 0, 1.0 - gray, gray)
  amount = jnp.abs(colour)
  safe = jnp.where(amount > 0, amount, 1.0)
  limit = jnp.where(amount > 0, jnp.clip(headroom, 0.0, None) / safe, jnp.inf)
  return jnp.minimum(1.0, jnp.min(limit, axis=-1, keepdims=True))


def _low_resolution(x: jax.Array, factor: int) -> jax.Array:
  """`x` averaged over factor x factor blocks, then bilinearly resized back (half-pixel centres, edges clamped)."""
  n, height, width, c = x.shape
  if height % factor or width % factor:
    raise ValueError(f"generator.colour_downscale={factor} must divide the image size, got {height}x{width}.")
  blocks = x.reshape(n, height // factor, factor, width // factor, factor, c).mean(axis=(2, 4))
  return task_lib.upsample_to(blocks, height, width, "linear")
