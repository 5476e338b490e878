"""1 - MS-SSIM as a training loss (Zhao et al. 2017, "Loss Functions for Image Restoration with Neural Networks").

Structural similarity penalises what L1 misses (lost contrast and structure,
i.e. blur) and the write-up "Image Restoration Using Generative Adversarial
Networks" adds it to L1 for that reason. This is the metric's MS-SSIM
(restore_jax.metrics: the same Gaussian window, local statistics, K1/K2 and
2x2 pooling, through the same code) with three differences that a loss needs:

- no rounding to 8-bit levels and no clipping: the images are compared as they
  are, in [0, 1] (data range 1), so every pixel has a gradient;
- fewer scales for training crops. Five scales of an 11-px window need 161-px
  images; the coarsest scale of a 64-px crop is 4 px. `scales` keeps the
  finest scales of Wang, Simoncelli & Bovik (2003) and their weights
  (0.0448, 0.2856, 0.3001, ...), scaled up to the total of all five so the
  result stays a weighted geometric mean in [0, 1]: with the default 3
  scales, (0.0448, 0.2856, 0.3001) * 1.0001 / 0.6305 = (0.0711, 0.4530,
  0.4760). (The five published weights, rounded to 4 digits, sum to 1.0001;
  scaling to their total rather than to 1 keeps scales=5 exactly the
  published MS-SSIM, and tf's.) The coarsest kept scale contributes full SSIM
  (luminance included), as in the original.
  `window_size` shrinks the window instead (or as well), `sigma` (1.5) its width;
- a finite gradient everywhere (see _safe_power).

The smallest side that fits is 2**(scales - 1) * (window_size - 1) + 1:

    scales           1    2    3    4    5
    window 11       11   21   41   81  161
    window 7         7   13   25   49   97
    window 5         5    9   17   33   65

The defaults, 3 scales of the 11-px window, fit 64-px crops (coarsest scale
16 px) and anything larger; 128-px crops also fit 4 scales of it.

Like tf.image.ssim_multiscale, each channel is scored on its own and the
channels are averaged (the write-up scored a gray image; a colour loss such as
restore_jax.losses.color.cosine_loss covers hue).
"""

import numbers

import jax
import jax.numpy as jnp

from restore_jax import metrics

DEFAULT_SCALES = 3
DEFAULT_WINDOW_SIZE = metrics.SSIM_WINDOW  # 11, Wang et al. (2004)
DEFAULT_SIGMA = metrics.SSIM_SIGMA  # 1.5

# Below this a factor's power x**w is replaced by the straight line from
# (0, 0) to (_LINEAR_BELOW, _LINEAR_BELOW**w); see _safe_power.
_LINEAR_BELOW = 1e-3


def ms_ssim_weights(scales: int) -> tuple[float, ...]:
  """The first `scales` MS-SSIM weights (finest first), scaled to the total of all five (~1)."""
  _check_scales(scales)
  kept = metrics.MS_SSIM_WEIGHTS[:scales]
  total = sum(metrics.MS_SSIM_WEIGHTS)
  return tuple(weight * total / sum(kept) for weight in kept)


def _safe_power(base: jax.Array, exponent: float) -> jax.Array:
  """max(base, 0)**exponent for 0 < exponent <= 1, with a bounded derivative.

  d/dx x**w = w x**(w - 1) is infinite at x = 0 for w < 1 (and JAX's chain
  rule then turns the zero gradient of a clip into 0 * inf = NaN). Below
  _LINEAR_BELOW the power is replaced by the chord from (0, 0) to
  (_LINEAR_BELOW, _LINEAR_BELOW**w): the value is still continuous, still 0
  for base <= 0 (as tf clips it), and the slope is at most
  _LINEAR_BELOW**(w - 1) (~700 for w = 0.045). Only factors within 1e-3 of 0
  differ from x**w, i.e. a prediction with (almost) no structure in common
  with the target, where the loss is ~1 either way.
  """
  base = jnp.maximum(base, 0.0)
  linear = base < _LINEAR_BELOW
  # The power sees a safe base where it is not used, so its gradient is finite there too.
  power = jnp.where(linear, _LINEAR_BELOW, base)**exponent
  return jnp.where(linear, base * _LINEAR_BELOW**(exponent - 1.0), power)


def ms_ssim_loss(
    pred: jax.Array,
    target: jax.Array,
    *,
    scales: int = DEFAULT_SCALES,
    window_size: int = DEFAULT_WINDOW_SIZE,
    sigma: float = DEFAULT_SIGMA,
) -> jax.Array:
  """1 - MS-SSIM of NHWC images in [0, 1], averaged over images and channels; a scalar.

  0 for identical images, 1 when some scale shares no structure with the
  target. Defined (with a finite gradient) for flat and black images too: the
  SSIM ratios have denominators of at least C1 = 1e-4 and C2 = 9e-4, and
  there is no square root. float64 inputs are kept (for gradient checks);
  anything narrower is computed in float32. Differentiable in reverse mode
  (jax.grad; the Gaussian filter has a custom gradient), not with jax.jvp.

  Args:
    pred, target: (N, H, W, C), the same shape; H and W at least
      2**(scales - 1) * (window_size - 1) + 1.
    scales: how many scales, 1 (plain SSIM) to 5 (the full MS-SSIM).
    window_size: side of the Gaussian window, odd, >= 3.
    sigma: standard deviation of the Gaussian window, in pixels.
  """
  _check_options(scales, window_size, sigma)
  if pred.shape != target.shape or pred.ndim != 4:
    raise ValueError(
        f"ms_ssim_loss needs two NHWC batches of the same shape, got {pred.shape} and {target.shape}.")
  height, width = pred.shape[1], pred.shape[2]
  minimum = metrics.ms_ssim_min_size(scales, window_size)
  if min(height, width) < minimum:
    raise ValueError(
        f"ms_ssim_loss with loss.ms_ssim.scales={scales} and loss.ms_ssim.window_size={window_size} "
        f"needs images of at least {minimum}x{minimum} pixels (the coarsest scale, side / "
        f"2**{scales - 1} rounded up, must hold the window), got {height}x{width}. "
        f"{_what_fits(min(height, width), window_size)}")
  dtype = jnp.result_type(pred.dtype, jnp.float32)
  factors = metrics.ms_ssim_terms(
      pred.astype(dtype), target.astype(dtype), num_scales=scales, data_range=1.0,
      window_size=window_size, sigma=sigma)
  per_channel = 1.0
  for index, weight in enumerate(ms_ssim_weights(scales)):
    per_channel = per_channel * _safe_power(factors[..., index], weight)
  return 1.0 - jnp.mean(per_channel)


def _what_fits(side: int, window_size: int) -> str:
  fitting = [s for s in range(1, len(metrics.MS_SSIM_WEIGHTS) + 1)
             if metrics.ms_ssim_min_size(s, window_size) <= side]
  if fitting:
    return f"With this window a {side}-px side fits loss.ms_ssim.scales <= {fitting[-1]}."
  return "Use larger crops or a smaller loss.ms_ssim.window_size."


def _is_integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_scales(scales: int) -> None:
  if not _is_integer(scales) or not 1 <= scales <= len(metrics.MS_SSIM_WEIGHTS):
    raise ValueError(
        f"loss.ms_ssim.scales must be an integer from 1 to {len(metrics.MS_SSIM_WEIGHTS)} "
        f"(the scales of Wang, Simoncelli & Bovik 2003), got {scales!r}.")


def _check_options(scales: int, window_size: int, sigma: float) -> None:
  _check_scales(scales)
  if not _is_integer(window_size) or window_size < 3 or window_size % 2 == 0:
    raise ValueError(
        f"loss.ms_ssim.window_size must be an odd integer >= 3 (11 in Wang et al. 2004), "
        f"got {window_size!r}.")
  if not sigma > 0:
    raise ValueError(f"loss.ms_ssim.sigma must be > 0 (1.5 in Wang et al. 2004), got {sigma!r}.")
