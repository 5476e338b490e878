"""NIQE against MATLAB's published value and against a float64 numpy/scipy implementation written here."""

import os
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage, optimize, special
import scipy.linalg
from skimage import color, data, filters

from restore_jax import perceptual
from restore_jax.perceptual import niqe

# MATLAB R2021a's niqe of shared/data/niqe/baboon.png (Y channel of rgb2ycbcr, rounded; no crop).
MATLAB_BABOON_NIQE = 5.72957338


def _shared_data() -> Path:
  env = os.environ.get("RESTORE_JAX_SHARED_DATA")
  return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


# ----------------------------------------------------------------------------------------------------------------
# An independent NIQE: float64 numpy/scipy, written from Mittal et al. 2013 and MATLAB's documented functions.


def _cubic(x):
  """Keys' cubic with a = -0.5, MATLAB imresize's kernel."""
  x = np.abs(x)
  return np.where(x <= 1, 1.5 * x**3 - 2.5 * x**2 + 1, np.where(x < 2, -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2, 0))


def _matlab_half(plane):
  """MATLAB imresize(plane, 0.5) (bicubic, antialiased): output j is centred on input 2j + 0.5 (0-based) and
  reads inputs 2j-3 .. 2j+4 with weights cubic(d / 2) / 2, edges mirrored (the edge pixel repeated)."""
  distances = 3.5 - np.arange(8)
  weights = _cubic(distances / 2) / 2
  weights /= weights.sum()

  def along_first_axis(a):
    out_len = -(-a.shape[0] // 2)
    padded = np.pad(a, [(3, 5)] + [(0, 0)] * (a.ndim - 1), mode="symmetric")
    return sum(w * padded[k:k + 2 * out_len:2] for k, w in enumerate(weights))

  return along_first_axis(along_first_axis(plane).T).T


def _shape_ratio(shape):
  return special.gamma(2 / shape)**2 / (special.gamma(1 / shape) * special.gamma(3 / shape))


def _fit_aggd(values):
  """Asymmetric generalised Gaussian by moment matching. The shape solves ratio(shape) = target with a root
  finder, then snaps to the nearer (in ratio) of its two neighbours on MATLAB's grid 0.2:0.001:10."""
  left = np.sqrt(np.mean(values[values < 0]**2))
  right = np.sqrt(np.mean(values[values > 0]**2))
  g = left / right
  target = np.mean(np.abs(values))**2 / np.mean(values**2) * (g**3 + 1) * (g + 1) / (g**2 + 1)**2
  grid = np.round(np.arange(0.2, 10.0005, 0.001), 3)
  if target <= _shape_ratio(0.2):
    shape = 0.2
  elif target >= _shape_ratio(10.0):
    shape = 10.0
  else:
    root = optimize.brentq(lambda s: _shape_ratio(s) - target, 0.2, 10.0, xtol=1e-12)
    below = grid[min(int(np.floor((root - 0.2) / 0.001 + 1e-9)), len(grid) - 1)]
    above = min(below + 0.001, 10.0)
    shape = min((below, above), key=lambda s: abs(_shape_ratio(s) - target))
  factor = np.sqrt(special.gamma(1 / shape) / special.gamma(3 / shape))
  return shape, left * factor, right * factor


def _block_features(block):
  shape, left, right = _fit_aggd(block.ravel())
  features = [shape, (left + right) / 2]
  for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):  # MATLAB circshift offsets of LIVE's computefeature.m.
    product = (block * np.roll(block, shift, axis=(0, 1))).ravel()
    shape, left, right = _fit_aggd(product)
    mean = (right - left) * special.gamma(2 / shape) / special.gamma(1 / shape)
    features += [shape, mean, left, right]
  return features


def _reference_niqe(plane):
  """NIQE of a 2-D float plane on the 0..255 scale."""
  model = np.load(niqe.PRISTINE_MODEL_FILE)
  mu_pristine, cov_pristine, window = model["mu_pris_param"][0], model["cov_pris_param"], model["gaussian_window"]
  rows, cols = plane.shape[0] // 96, plane.shape[1] // 96
  plane = plane[:rows * 96, :cols * 96]
  per_scale = []
  for block in (96, 48):
    mu = ndimage.correlate(plane, window, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.correlate(plane * plane, window, mode="nearest") - mu * mu))
    mscn = (plane - mu) / (sigma + 1)
    per_scale.append([_block_features(mscn[r * block:(r + 1) * block, c * block:(c + 1) * block])
                      for r in range(rows) for c in range(cols)])
    plane = _matlab_half(plane)
  features = np.concatenate([np.array(f) for f in per_scale], axis=1)
  difference = mu_pristine - features.mean(axis=0)
  inverse = scipy.linalg.pinvh((cov_pristine + np.cov(features.T)) / 2)
  return float(np.sqrt(difference @ inverse @ difference))


def _synthetic_rgb(height, width, seed):
  """A made-up 'photo': smooth random fields at three scales, an edge, fine noise; 8-bit RGB."""
  rng = np.random.default_rng(seed)
  field = sum(ndimage.gaussian_filter(rng.normal(size=(height, width)), s) * s for s in (1.0, 4.0, 16.0))
  field[height // 3:, width // 2:] += 1.5
  rgb = np.stack([field, 0.7 * field + 0.3 * rng.normal(size=field.shape), -0.5 * field], axis=-1)
  rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min())
  return np.round(255 * np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0, 1)).astype(np.uint8)


def _matlab_y(rgb_uint8):
  """MATLAB rgb2ycbcr's Y of an 8-bit image, rounded half up, via scikit-image's conversion."""
  return np.floor(color.rgb2ycbcr(rgb_uint8)[..., 0] + 0.5)


# ----------------------------------------------------------------------------------------------------------------


def test_reference_resize_is_matlab_imresize_on_a_hand_case():
  # A ramp survives antialiased halving exactly in the interior: output j is the mean of inputs 2j, 2j+1.
  ramp = np.tile(np.arange(20, dtype=np.float64), (12, 1))
  np.testing.assert_allclose(_matlab_half(ramp)[:, 2:8], np.tile(np.arange(4.5, 16, 2), (6, 1)), atol=1e-12)


def test_packaged_window_is_matlab_fspecial_gaussian_7_7_over_6():
  offsets = np.arange(-3, 4)
  window = np.exp(-(offsets[:, None]**2 + offsets[None, :]**2) / (2 * (7 / 6)**2))
  np.testing.assert_allclose(niqe.pristine_model()[2], window / window.sum(), rtol=1e-6)
  mean, cov, _ = niqe.pristine_model()
  assert mean.shape == (36,) and cov.shape == (36, 36)
  np.testing.assert_allclose(cov, cov.T, atol=1e-12)


@pytest.mark.parametrize("size, crop_border, seed", [((210, 300), 0, 0), ((220, 310), 7, 1)])
def test_matches_an_independent_float64_implementation(size, crop_border, seed):
  rgb = _synthetic_rgb(*size, seed)
  plane = _matlab_y(rgb)
  if crop_border:
    plane = plane[crop_border:-crop_border, crop_border:-crop_border]
  expected = _reference_niqe(plane)
  ours = perceptual.make_metric("niqe", crop_border=crop_border)(rgb / 255.0)
  assert 2 < expected < 30
  assert ours == pytest.approx(expected, rel=1e-5)


def test_gray_images_are_scored_as_they_are():
  plane = _synthetic_rgb(200, 200, 2)[..., 0]
  assert niqe.niqe(plane[..., None] / 255.0) == pytest.approx(_reference_niqe(plane.astype(np.float64)), rel=1e-5)


def test_matlab_value_on_baboon():
  path = _shared_data() / "niqe" / "baboon.png"
  if not path.is_file():
    pytest.skip(f"{path} is not here (the shared data folder sits beside the checkout only in CI).")
  rgb = np.asarray(Image.open(path).convert("RGB"))
  assert niqe.niqe(rgb / 255.0) == pytest.approx(MATLAB_BABOON_NIQE, abs=1e-3)
  packaged = np.load(niqe.PRISTINE_MODEL_FILE)
  shared = np.load(path.parent / "niqe_pris_params.npz")
  for key in shared.files:
    np.testing.assert_array_equal(packaged[key], shared[key])


def test_blur_and_noise_look_less_natural():
  photo = data.astronaut()[::2, ::2] / 255.0
  score = perceptual.make_niqe()
  noisy = np.clip(photo + np.random.default_rng(0).normal(0, 0.05, photo.shape), 0, 1)
  blurred = filters.gaussian(photo, sigma=2, channel_axis=-1)
  assert score(noisy) > score(photo) + 1
  assert score(blurred) > score(photo) + 1


def test_rejects_images_without_a_whole_block_and_bad_options():
  with pytest.raises(ValueError, match="at least one 96x96 block"):
    niqe.niqe(np.zeros((100, 95, 3)))
  with pytest.raises(ValueError, match="at least one 96x96 block"):
    niqe.niqe(np.zeros((100, 100, 3)), crop_border=4)
  with pytest.raises(ValueError, match="crop_border must be an integer >= 0"):
    perceptual.make_metric("niqe", crop_border=-2)
  with pytest.raises(ValueError, match="1 or 3 channels"):
    niqe.niqe(np.zeros((100, 100, 2)))
