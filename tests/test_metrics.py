"""PSNR against scikit-image on real photographs, and hand-computed cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color, data, filters
from skimage.metrics import peak_signal_noise_ratio

from restore_jax import metrics

SIZE = 128  # a common crop so the photographs batch together


def _photo_pairs():
  """(clean, degraded) uint8 pairs: a noisy, a blurred and a darkened photograph."""
  rng = np.random.default_rng(0)
  astronaut = data.astronaut()[100:100 + SIZE, 150:150 + SIZE]
  coffee = data.coffee()[150:150 + SIZE, 200:200 + SIZE]
  chelsea = data.chelsea()[80:80 + SIZE, 150:150 + SIZE]
  noisy = np.clip(astronaut + rng.normal(0, 8, astronaut.shape), 0, 255).round().astype(np.uint8)
  blurred = (filters.gaussian(coffee, sigma=1.5, channel_axis=-1) * 255).round().astype(np.uint8)
  darker = (chelsea * 0.9).round().astype(np.uint8)
  return [(astronaut, noisy), (coffee, blurred), (chelsea, darker)]


@pytest.fixture(scope="module")
def photo_pairs():
  return _photo_pairs()


def _as_unit(image_uint8):
  return jnp.asarray(image_uint8, jnp.float32) / 255.0


def _reference_psnr(clean, degraded, crop_border=0, y_channel=False):
  """The literature's PSNR computed with numpy + scikit-image only."""
  clean, degraded = clean.astype(np.float64), degraded.astype(np.float64)
  if y_channel:
    # rgb2ycbcr on [0, 1] input gives Y in [16, 235] with BT.601 constants.
    clean = color.rgb2ycbcr(clean / 255.0)[..., :1]
    degraded = color.rgb2ycbcr(degraded / 255.0)[..., :1]
  if crop_border:
    clean = clean[crop_border:-crop_border, crop_border:-crop_border]
    degraded = degraded[crop_border:-crop_border, crop_border:-crop_border]
  return peak_signal_noise_ratio(clean, degraded, data_range=255)


@pytest.mark.parametrize("crop_border", [0, 4])
@pytest.mark.parametrize("y_channel", [False, True])
def test_psnr_matches_skimage_single_images(photo_pairs, crop_border, y_channel):
  for clean, degraded in photo_pairs:
    ours = metrics.psnr(_as_unit(clean), _as_unit(degraded),
                        crop_border=crop_border, y_channel=y_channel)
    assert ours.shape == ()
    expected = _reference_psnr(clean, degraded, crop_border, y_channel)
    np.testing.assert_allclose(ours, expected, atol=1e-3)


@pytest.mark.parametrize("y_channel", [False, True])
def test_psnr_batched_matches_per_image(photo_pairs, y_channel):
  clean = jnp.stack([_as_unit(c) for c, _ in photo_pairs])
  degraded = jnp.stack([_as_unit(d) for _, d in photo_pairs])
  ours = metrics.psnr(clean, degraded, crop_border=4, y_channel=y_channel)
  assert ours.shape == (3,)
  expected = [_reference_psnr(c, d, 4, y_channel) for c, d in photo_pairs]
  np.testing.assert_allclose(ours, expected, atol=1e-3)


def test_psnr_rounds_float_outputs_to_8bit_levels(photo_pairs):
  clean, _ = photo_pairs[1]
  # A float output not on the 8-bit grid, slightly outside [0, 1] in places.
  blurred = filters.gaussian(clean, sigma=1.0, channel_axis=-1).astype(np.float32) * 1.02 - 0.01
  rounded = np.round(np.clip(blurred, 0, 1) * 255)
  ours = metrics.psnr(_as_unit(clean), jnp.asarray(blurred), crop_border=2)
  np.testing.assert_allclose(ours, _reference_psnr(clean, rounded, 2), atol=1e-3)
  ours_y = metrics.psnr(_as_unit(clean), jnp.asarray(blurred), crop_border=2, y_channel=True)
  np.testing.assert_allclose(ours_y, _reference_psnr(clean, rounded, 2, y_channel=True), atol=1e-3)
  unrounded = metrics.psnr(_as_unit(clean), jnp.asarray(blurred), round_to_uint8=False)
  expected = peak_signal_noise_ratio(clean.astype(np.float64),
                                     np.clip(blurred.astype(np.float64), 0, 1) * 255, data_range=255)
  np.testing.assert_allclose(unrounded, expected, atol=1e-3)


def test_rgb_to_y_matches_bt601_formula():
  rgb = np.random.default_rng(1).random((5, 7, 3), dtype=np.float32)
  expected = 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]
  y = metrics.rgb_to_y(jnp.asarray(rgb))
  assert y.shape == (5, 7, 1)
  np.testing.assert_allclose(y[..., 0], expected, rtol=1e-6)
  np.testing.assert_allclose(metrics.rgb_to_y(jnp.zeros((1, 3))), [[16.0]])
  np.testing.assert_allclose(metrics.rgb_to_y(jnp.ones((1, 3))), [[235.0]], rtol=1e-6)


def test_to_uint8_levels():
  x = jnp.array([-0.5, 0.0, 0.3 / 255, 0.7 / 255, 100.4 / 255, 1.0, 2.0])
  np.testing.assert_array_equal(metrics.to_uint8_levels(x), [0, 0, 0, 1, 100, 255, 255])
  assert metrics.to_uint8_levels(x).dtype == jnp.float32


def test_psnr_one_level_off_hand_computed():
  # One pixel of an 8x8 gray image one level off: MSE = 1/64, PSNR = 10 log10(255^2 * 64).
  clean = np.full((8, 8, 1), 100, np.uint8)
  off = clean.copy()
  off[3, 5, 0] = 101
  ours = metrics.psnr(_as_unit(clean), _as_unit(off))
  np.testing.assert_allclose(ours, 10 * math.log10(255**2 * 64), atol=1e-4)  # 66.1926 dB
  # Cropping 1 pixel keeps the pixel: MSE = 1/36.
  np.testing.assert_allclose(metrics.psnr(_as_unit(clean), _as_unit(off), crop_border=1),
                             10 * math.log10(255**2 * 36), atol=1e-4)
  # Cropping 3 pixels removes it (row 3 survives, column 5 does not): identical -> +inf.
  assert np.isposinf(metrics.psnr(_as_unit(clean), _as_unit(off), crop_border=3))


def test_psnr_identical_is_inf_and_jittable():
  image = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  scores = jax.jit(lambda a, b: metrics.psnr(a, b, crop_border=2, y_channel=True))(image, image)
  assert np.all(np.isposinf(scores))


def test_psnr_errors():
  with pytest.raises(ValueError, match="same shape"):
    metrics.psnr(jnp.zeros((8, 8, 3)), jnp.zeros((8, 9, 3)))
  with pytest.raises(ValueError, match="crop_border"):
    metrics.psnr(jnp.zeros((8, 8, 3)), jnp.zeros((8, 8, 3)), crop_border=4)
  with pytest.raises(ValueError, match="RGB"):
    metrics.psnr(jnp.zeros((8, 8, 1)), jnp.zeros((8, 8, 1)), y_channel=True)
  with pytest.raises(ValueError, match="HWC"):
    metrics.psnr(jnp.zeros((8, 8)), jnp.zeros((8, 8)))
