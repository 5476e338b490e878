"""NIQE, the Naturalness Image Quality Evaluator (Mittal, Soundararajan & Bovik 2013), with MATLAB's conventions.

A no-reference score: how far the statistics of an image's 96x96 blocks lie from those of pristine natural
photographs (a multivariate Gaussian LIVE fitted on 125 images, shipped in niqe_pristine_params.npz with its
notice in NIQE_NOTICE.txt). Lower is more natural. GAN restorations typically score lower (better) than
PSNR-trained ones of the same image (Blau & Michaeli 2018), which is why it is reported next to PSNR.

The steps, as LIVE's MATLAB release and MATLAB's `niqe` compute them:
  1. an RGB image becomes MATLAB's rgb2ycbcr Y of its 8-bit levels, rounded (restore_jax.metrics); a gray image
     is used as it is; values stay on the 0..255 scale;
  2. optional `crop_border`, then the image is cut to whole 96x96 blocks (rows and columns beyond are dropped);
  3. at two scales (the image, then MATLAB's imresize(0.5) bicubic, with 48x48 blocks):
     MSCN coefficients (x - mu) / (sigma + 1), with mu and sigma the local mean and standard deviation under the
     7x7 Gaussian window (sigma 7/6) and replicated borders;
  4. per block, 18 features: an asymmetric generalised Gaussian (AGGD) fit of the MSCN coefficients (shape,
     mean of the two scales), and for the products of each coefficient with its right, lower, lower-right and
     lower-left neighbour (circularly within the block) an AGGD fit (shape, mean, left and right scales).
     Shapes come from moment matching over MATLAB's grid 0.2:0.001:10;
  5. the 36 features of all blocks give a mean and a covariance (blocks with a NaN feature, e.g. flat ones,
     are left out of the covariance, as MATLAB's nancov does), and
       NIQE = sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2) (mu_p - mu)).

Where the work runs: the filtering, the neighbour products and the per-block moments are one jitted JAX
function over fixed batches of blocks (each with the 3-pixel halo its filter needs), so it compiles once per
block size whatever the image size; it runs in float32, the local variance summed from squared deviations
rather than as E[x^2] - mu^2, so nothing cancels. The moment-matching fits and the Gaussian distance run in
numpy float64: neighbouring shapes on the grid differ in their moment ratio by as little as 2e-6, which float32
ratios (about 7 significant digits) would not resolve, and the pseudo-inverse of the averaged 36x36 covariance
(the pristine one alone has a condition number of 1.6e5) needs double precision.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from restore_jax.degradations.resize import imresize
from restore_jax.perceptual.common import check_crop_border, prepare_levels

PRISTINE_MODEL_FILE = pathlib.Path(__file__).with_name("niqe_pristine_params.npz")
BLOCK_SIZE = 96  # LIVE fitted the pristine model on 96x96 patches (Mittal et al. 2013), so NIQE scores those.
NUM_FEATURES = 36  # 18 per scale, two scales.

# Moment matching searches the AGGD shape over MATLAB's 0.2:0.001:10 (LIVE's estimateaggdparam.m).
_SHAPE_GRID = 0.2 + 0.001 * np.arange(9801)
# For an AGGD of shape a, Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)); through gammaln, finite over the whole grid.
_SHAPE_RATIO = np.exp(
    2 * special.gammaln(2 / _SHAPE_GRID) - special.gammaln(1 / _SHAPE_GRID) - special.gammaln(3 / _SHAPE_GRID))
# Neighbours multiplied with each coefficient: right, below, below-right, below-left (row, column offsets).
_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))


@functools.lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(means (36,), covariance (36, 36), 7x7 Gaussian window), float64, from the packaged LIVE model."""
  with np.load(PRISTINE_MODEL_FILE) as model:
    return (model["mu_pris_param"].reshape(NUM_FEATURES), model["cov_pris_param"],
            model["gaussian_window"])


def niqe(image, *, crop_border: int = 0, round_to_uint8: bool = True) -> float:
  """NIQE of one image; lower is better (more natural).

  Args:
    image: HWC float in [0, 1], RGB (scored on its BT.601 Y channel, as MATLAB) or one channel.
    crop_border: pixels dropped from each side first (the SR scale, as for PSNR).
    round_to_uint8: round to 8-bit levels first, the numbers a saved PNG holds (MATLAB scores uint8 files).

  The image must hold at least one 96x96 block after cropping.
  """
  check_crop_border("niqe", crop_border)
  levels = luma_levels(image, crop_border=crop_border, round_to_uint8=round_to_uint8)
  return niqe_of_levels(levels)


def luma_levels(image, *, crop_border: int, round_to_uint8: bool) -> np.ndarray:
  """HWC in [0, 1] -> the 2-D float64 plane NIQE scores, on the 0..255 scale (Y of RGB, as metrics.py)."""
  image = jnp.asarray(image)
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"niqe expects an HWC image with 1 or 3 channels, got shape {image.shape}.")
  levels = prepare_levels(image, crop_border=crop_border, y_channel=image.shape[-1] == 3,
                          round_to_uint8=round_to_uint8)
  return np.asarray(levels, np.float64)[..., 0]


def niqe_of_levels(levels: np.ndarray) -> float:
  """NIQE of a 2-D plane on the 0..255 scale (steps 2-5 of the module docstring)."""
  levels = np.asarray(levels, np.float64)
  if levels.ndim != 2:
    raise ValueError(f"niqe_of_levels expects a 2-D plane, got shape {levels.shape}.")
  features = block_features(levels)
  return _distance_to_pristine(features)


def block_features(levels: np.ndarray) -> np.ndarray:
  """(blocks, 36) float64 NIQE features of a 2-D 0..255 plane, blocks in row-major order."""
  height, width = levels.shape
  rows, cols = height // BLOCK_SIZE, width // BLOCK_SIZE
  if rows == 0 or cols == 0:
    raise ValueError(
        f"niqe needs at least one {BLOCK_SIZE}x{BLOCK_SIZE} block after crop_border, got a {height}x{width} "
        "image.")
  levels = levels[:rows * BLOCK_SIZE, :cols * BLOCK_SIZE]
  per_scale = []
  for block in (BLOCK_SIZE, BLOCK_SIZE // 2):
    per_scale.append(_features_from_moments(_block_moments(levels, block)))
    # MATLAB's imresize(im, 0.5): bicubic with antialiasing, on the same 0..255 values.
    levels = imresize(levels, 0.5).astype(np.float64)
  return np.concatenate(per_scale, axis=1)


# Blocks per call of the jitted function: a fixed batch, so it compiles once per block size, whatever the image.
_BLOCKS_PER_CALL = 16


def _block_moments(levels: np.ndarray, block: int) -> np.ndarray:
  """(blocks, 5, 4) float64 moments of a plane cut into block x block tiles (see _tile_moments).

  Each tile is cut with a halo of 3 pixels (the window's reach), taken from the image or, at its border, from
  the replicated edge (MATLAB imfilter's 'replicate'), so its MSCN coefficients equal the whole image's.
  """
  window = pristine_model()[2]
  reach = window.shape[0] // 2
  rows, cols = levels.shape[0] // block, levels.shape[1] // block
  padded = np.pad(levels, reach, mode="edge")
  span = block + 2 * reach
  tiles = np.stack([padded[r * block:r * block + span, c * block:c * block + span]
                    for r in range(rows) for c in range(cols)]).astype(np.float32)
  moments = []
  for start in range(0, len(tiles), _BLOCKS_PER_CALL):
    chunk = tiles[start:start + _BLOCKS_PER_CALL]
    filled = np.concatenate([chunk, np.repeat(chunk[:1], _BLOCKS_PER_CALL - len(chunk), axis=0)])
    moments.append(np.asarray(_tile_moments(jnp.asarray(filled), jnp.asarray(window, jnp.float32)))[:len(chunk)])
  return np.concatenate(moments).astype(np.float64)


@jax.jit
def _tile_moments(tiles: jax.Array, window: jax.Array) -> jax.Array:
  """Per tile (with its halo), for the MSCN coefficients and their 4 neighbour products: mean of x^2 over
  x < 0, over x > 0, mean |x| and mean x^2. Returns (tiles, 5, 4); a mean over no values is NaN, as in MATLAB."""
  mscn = _mscn(tiles, window)
  signals = [mscn] + [mscn * jnp.roll(mscn, shift, axis=(1, 2)) for shift in _NEIGHBOURS]
  values = jnp.stack(signals, axis=1).reshape(tiles.shape[0], len(signals), -1)
  squares = values * values
  negative, positive = values < 0, values > 0
  left = jnp.sum(jnp.where(negative, squares, 0), -1) / jnp.sum(negative, -1)
  right = jnp.sum(jnp.where(positive, squares, 0), -1) / jnp.sum(positive, -1)
  return jnp.stack([left, right, jnp.mean(jnp.abs(values), -1), jnp.mean(squares, -1)], axis=-1)


def _mscn(tiles: jax.Array, window: jax.Array) -> jax.Array:
  """Mean-subtracted contrast-normalised coefficients (x - mu) / (sigma + 1) of (N, b + 6, b + 6) tiles with a
  3-pixel halo -> (N, b, b); mu and sigma are the local mean and standard deviation under the window."""
  size = window.shape[0]
  height, width = tiles.shape[1] - size + 1, tiles.shape[2] - size + 1
  shifted = [tiles[:, i:i + height, j:j + width] for i in range(size) for j in range(size)]
  weights = window.reshape(-1)
  mean = sum(w * s for w, s in zip(weights, shifted))
  # Sum of w (x - mu)^2 equals E[x^2] - mu^2 exactly, without its cancellation in float32.
  variance = sum(w * jnp.square(s - mean) for w, s in zip(weights, shifted))
  centre = tiles[:, size // 2:size // 2 + height, size // 2:size // 2 + width]
  return (centre - mean) / (jnp.sqrt(variance) + 1.0)


def _features_from_moments(moments: np.ndarray) -> np.ndarray:
  """(blocks, 5, 4) moments -> (blocks, 18) features: [shape, mean scale] of the coefficients, then
  [shape, mean, left scale, right scale] of each neighbour product."""
  left_ms, right_ms, mean_abs, mean_sq = np.moveaxis(moments, -1, 0)
  with np.errstate(divide="ignore", invalid="ignore"):
    left_std, right_std = np.sqrt(left_ms), np.sqrt(right_ms)
    asymmetry = left_std / right_std
    ratio = mean_abs**2 / mean_sq
    # Moment-matching target of the AGGD shape (Lasmar, Stitou & Berthoumieu 2009, as in LIVE's release).
    target = ratio * (asymmetry**3 + 1) * (asymmetry + 1) / (asymmetry**2 + 1)**2
    errors = np.square(_SHAPE_RATIO - target[..., None])
    # MATLAB's min over all-NaN errors returns the first index; np.argmin returns the first NaN, also index 0.
    shape = _SHAPE_GRID[np.argmin(errors, axis=-1)]
    spread = np.sqrt(special.gamma(1 / shape) / special.gamma(3 / shape))
    left_scale, right_scale = left_std * spread, right_std * spread
    mean = (right_scale - left_scale) * special.gamma(2 / shape) / special.gamma(1 / shape)
  columns = [shape[:, 0], (left_scale[:, 0] + right_scale[:, 0]) / 2]
  for signal in range(1, 5):
    columns += [shape[:, signal], mean[:, signal], left_scale[:, signal], right_scale[:, signal]]
  return np.stack(columns, axis=1)


def _distance_to_pristine(features: np.ndarray) -> float:
  """Mahalanobis-like distance between the pristine Gaussian and the one fitted to `features`, float64."""
  pristine_mean, pristine_cov, _ = pristine_model()
  mean = np.nanmean(features, axis=0)
  complete = features[~np.isnan(features).any(axis=1)]
  if len(complete) > 1:
    cov = np.cov(complete, rowvar=False)
  else:  # MATLAB's cov of one observation is 0 (and of none, NaN).
    cov = np.zeros((NUM_FEATURES, NUM_FEATURES)) if len(complete) else np.full((NUM_FEATURES,) * 2, np.nan)
  difference = pristine_mean - mean
  inverse = np.linalg.pinv((pristine_cov + cov) / 2)
  return float(np.sqrt(difference @ inverse @ difference))
