"""PSNR, SSIM and MS-SSIM against scikit-image and TensorFlow on real photographs, and hand cases."""

import io
import math

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
from skimage import color, data, filters
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
import tensorflow as tf

from restore_jax import metrics

# A common crop so the photographs batch together; 192 - 2 * 4 = 184 still
# leaves room for MS-SSIM's 5 scales (>= 161), and its halvings hit an odd side.
SIZE = 192
CROP = 4


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
  return np.asarray(Image.open(buffer).convert("RGB"))


def _photo_pairs():
  """(clean, distorted) uint8 pairs: a noisy, a blurred and a JPEG-compressed photograph."""
  rng = np.random.default_rng(0)
  astronaut = data.astronaut()[100:100 + SIZE, 150:150 + SIZE]
  coffee = data.coffee()[150:150 + SIZE, 200:200 + SIZE]
  chelsea = data.chelsea()[80:80 + SIZE, 150:150 + SIZE]
  noisy = np.clip(astronaut + rng.normal(0, 8, astronaut.shape), 0, 255).round().astype(np.uint8)
  blurred = (filters.gaussian(coffee, sigma=1.5, channel_axis=-1) * 255).round().astype(np.uint8)
  compressed = _jpeg(chelsea, quality=15)
  return [(astronaut, noisy), (coffee, blurred), (chelsea, compressed)]


@pytest.fixture(scope="module")
def photo_pairs():
  return _photo_pairs()


def _as_unit(image_uint8):
  return jnp.asarray(image_uint8, jnp.float32) / 255.0


def _reference_levels(image, crop_border=0, y_channel=False):
  """The literature's prepared levels (float64), with numpy + scikit-image only.

  Y: skimage's rgb2ycbcr (BT.601, [16, 235]) on the 8-bit RGB, rounded to an
  8-bit level as MATLAB's rgb2ycbcr does on uint8 images.
  """
  levels = image.astype(np.float64)
  if y_channel:
    levels = _round_half_up(color.rgb2ycbcr(levels / 255.0)[..., :1])
  if crop_border:
    levels = levels[crop_border:-crop_border, crop_border:-crop_border]
  return levels


def _round_half_up(y):
  """Round to the nearest level, exact ties (e.g. 52.5, which float64 may hold as 52.4999..) up.

  Y of 8-bit RGB is a multiple of 1/255000, so a non-tie is at least 4e-6 from
  a half and the 1e-9 nudge only decides ties.
  """
  return np.floor(y + 0.5 + 1e-9)


def _reference_psnr(clean, degraded, crop_border=0, y_channel=False):
  return peak_signal_noise_ratio(_reference_levels(clean, crop_border, y_channel),
                                 _reference_levels(degraded, crop_border, y_channel),
                                 data_range=255)


def _skimage_ssim(a_levels, b_levels):
  """Wang et al.'s SSIM as scikit-image computes it, on 0..255 levels (HWC)."""
  return structural_similarity(a_levels, b_levels, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, data_range=255, channel_axis=-1)


def _tf_ms_ssim(a_levels, b_levels):
  """tf.image.ssim_multiscale with its default power factors, on 0..255 levels (HWC)."""
  a = tf.constant(a_levels[None], tf.float32)
  b = tf.constant(b_levels[None], tf.float32)
  return float(tf.image.ssim_multiscale(a, b, max_val=255.0)[0])


# ----------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("crop_border", [0, CROP])
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
  ours = metrics.psnr(clean, degraded, crop_border=CROP, y_channel=y_channel)
  assert ours.shape == (3,)
  expected = [_reference_psnr(c, d, CROP, y_channel) for c, d in photo_pairs]
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
  # round_to_uint8=False: neither RGB nor Y is rounded.
  unrounded = metrics.psnr(_as_unit(clean), jnp.asarray(blurred), round_to_uint8=False)
  expected = peak_signal_noise_ratio(clean.astype(np.float64),
                                     np.clip(blurred.astype(np.float64), 0, 1) * 255, data_range=255)
  np.testing.assert_allclose(unrounded, expected, atol=1e-3)
  unrounded_y = metrics.psnr(_as_unit(clean), jnp.asarray(blurred), y_channel=True,
                             round_to_uint8=False)
  expected_y = peak_signal_noise_ratio(
      color.rgb2ycbcr(clean / 255.0)[..., 0],
      color.rgb2ycbcr(np.clip(blurred.astype(np.float64), 0, 1))[..., 0], data_range=255)
  np.testing.assert_allclose(unrounded_y, expected_y, atol=1e-3)


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


# ----------------------------------------------------------------------------- Y channel


def test_rgb_to_y_matches_bt601_formula():
  rgb = np.random.default_rng(1).random((5, 7, 3), dtype=np.float32)
  expected = 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]
  y = metrics.rgb_to_y(jnp.asarray(rgb))
  assert y.shape == (5, 7, 1)
  np.testing.assert_allclose(y[..., 0], expected, rtol=1e-6)
  np.testing.assert_allclose(metrics.rgb_to_y(jnp.zeros((1, 3))), [[16.0]])
  np.testing.assert_allclose(metrics.rgb_to_y(jnp.ones((1, 3))), [[235.0]], rtol=1e-6)


def test_y_levels_are_rounded_bt601_of_8bit_rgb():
  # Every 8-bit colour on a coarse grid plus random ones, against skimage's float Y.
  rng = np.random.default_rng(2)
  grid = np.stack(np.meshgrid(*[np.arange(0, 256, 15)] * 3, indexing="ij"), -1).reshape(-1, 3)
  rgb = np.concatenate([grid, rng.integers(0, 256, (5000, 3))]).astype(np.uint8)
  ours = metrics.rgb_levels_to_y_levels(jnp.asarray(rgb, jnp.float32))
  expected = _round_half_up(color.rgb2ycbcr(rgb[None] / 255.0)[0, :, 0])
  np.testing.assert_array_equal(ours[:, 0], expected)
  assert ours.shape == (len(rgb), 1) and ours.dtype == jnp.float32


def test_y_rounding_hand_cases():
  # Gray 100: Y = 16 + 219 * 100 / 255 = 101.882 -> 102; gray 101: 102.741 -> 103.
  np.testing.assert_array_equal(
      metrics.rgb_levels_to_y_levels(jnp.array([[100.0] * 3, [101.0] * 3])), [[102.0], [103.0]])
  # An exact tie: (65481 * 2 + 128553 * 44 + 24966 * 141) / 255000 = 36.5, Y = 52.5,
  # which rounds up to 53 (round-half-even would give 52).
  np.testing.assert_array_equal(metrics.rgb_levels_to_y_levels(jnp.array([2.0, 44.0, 141.0])), [53.0])
  # So two flat gray images one RGB level apart are one Y level apart when
  # rounding (PSNR = 20 log10 255 = 48.1308) and 219/255 of a level when not.
  a = jnp.full((8, 8, 3), 100 / 255)
  b = jnp.full((8, 8, 3), 101 / 255)
  np.testing.assert_allclose(metrics.psnr(a, b, y_channel=True), 20 * math.log10(255), atol=1e-4)
  np.testing.assert_allclose(metrics.psnr(a, b, y_channel=True, round_to_uint8=False),
                             20 * math.log10(255 / (219 / 255)), atol=1e-3)  # 49.4510 dB


def test_to_uint8_levels():
  x = jnp.array([-0.5, 0.0, 0.3 / 255, 0.7 / 255, 100.4 / 255, 1.0, 2.0])
  np.testing.assert_array_equal(metrics.to_uint8_levels(x), [0, 0, 0, 1, 100, 255, 255])
  assert metrics.to_uint8_levels(x).dtype == jnp.float32


# ----------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("crop_border", [0, CROP])
@pytest.mark.parametrize("y_channel", [False, True])
def test_ssim_matches_skimage(photo_pairs, crop_border, y_channel):
  clean = jnp.stack([_as_unit(c) for c, _ in photo_pairs])
  degraded = jnp.stack([_as_unit(d) for _, d in photo_pairs])
  ours = metrics.ssim(clean, degraded, crop_border=crop_border, y_channel=y_channel)
  assert ours.shape == (3,)
  expected = [_skimage_ssim(_reference_levels(c, crop_border, y_channel),
                            _reference_levels(d, crop_border, y_channel))
              for c, d in photo_pairs]
  np.testing.assert_allclose(ours, expected, atol=1e-4)
  # The distortions are real: well below 1, and different from each other.
  assert max(expected) < 0.95 and np.ptp(expected) > 0.02


def test_ssim_single_image_gray_and_unrounded(photo_pairs):
  clean, degraded = photo_pairs[0]
  single = metrics.ssim(_as_unit(clean), _as_unit(degraded), crop_border=CROP)
  assert single.shape == ()
  np.testing.assert_allclose(single, _skimage_ssim(_reference_levels(clean, CROP),
                                                   _reference_levels(degraded, CROP)), atol=1e-4)
  # One-channel photograph, odd sizes.
  camera = data.camera()[100:171, 200:293, None]
  noisy = np.clip(camera + np.random.default_rng(3).normal(0, 12, camera.shape), 0, 255)
  noisy = noisy.round().astype(np.uint8)
  np.testing.assert_allclose(metrics.ssim(_as_unit(camera), _as_unit(noisy)),
                             _skimage_ssim(camera.astype(np.float64), noisy.astype(np.float64)),
                             atol=1e-4)
  # round_to_uint8=False compares the clipped float values themselves.
  soft = filters.gaussian(clean, sigma=0.8, channel_axis=-1).astype(np.float32) * 1.03 - 0.01
  ours = metrics.ssim(_as_unit(clean), jnp.asarray(soft), round_to_uint8=False)
  expected = _skimage_ssim(clean.astype(np.float64), np.clip(soft.astype(np.float64), 0, 1) * 255)
  np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_ssim_matches_skimage_on_a_large_image():
  # A whole photograph: float32 moments must stay accurate over large flat areas.
  clean = data.astronaut()
  compressed = _jpeg(clean, quality=10)
  ours = metrics.ssim(_as_unit(clean), _as_unit(compressed), y_channel=True, crop_border=4)
  expected = _skimage_ssim(_reference_levels(clean, 4, True), _reference_levels(compressed, 4, True))
  np.testing.assert_allclose(ours, expected, atol=1e-4)


# ----------------------------------------------------------------------------- MS-SSIM


@pytest.mark.parametrize("y_channel", [False, True])
def test_ms_ssim_matches_tensorflow(photo_pairs, y_channel):
  clean = jnp.stack([_as_unit(c) for c, _ in photo_pairs])
  degraded = jnp.stack([_as_unit(d) for _, d in photo_pairs])
  ours = metrics.ms_ssim(clean, degraded, crop_border=CROP, y_channel=y_channel)
  assert ours.shape == (3,)
  expected = [_tf_ms_ssim(_reference_levels(c, CROP, y_channel),
                          _reference_levels(d, CROP, y_channel))
              for c, d in photo_pairs]
  np.testing.assert_allclose(ours, expected, atol=1e-4)
  assert max(expected) < 0.99 and np.ptp(expected) > 0.01


def test_ms_ssim_odd_sizes_match_tensorflow():
  # 175x163 -> 88x82 -> 44x41 -> 22x21 -> 11x11: tf pads odd sides by repeating the last row.
  clean = data.coffee()[100:275, 150:313]
  noisy = np.clip(clean + np.random.default_rng(4).normal(0, 20, clean.shape), 0, 255)
  noisy = noisy.round().astype(np.uint8)
  ours = metrics.ms_ssim(_as_unit(clean), _as_unit(noisy))
  assert ours.shape == ()
  np.testing.assert_allclose(ours, _tf_ms_ssim(clean.astype(np.float64), noisy.astype(np.float64)),
                             atol=1e-4)


def test_ms_ssim_size_limit():
  assert metrics.MS_SSIM_MIN_SIZE == 161
  ok = jnp.zeros((161, 170, 3))
  np.testing.assert_allclose(metrics.ms_ssim(ok, ok), 1.0, atol=1e-6)
  with pytest.raises(ValueError, match="at least 161x161"):
    metrics.ms_ssim(jnp.zeros((160, 300, 3)), jnp.zeros((160, 300, 3)))
  # The limit applies after cropping.
  with pytest.raises(ValueError, match="after crop_border"):
    metrics.ms_ssim(ok, ok, crop_border=1)


# ----------------------------------------------------------------------------- all metrics


def test_identical_images_score_perfectly(photo_pairs):
  clean = jnp.stack([_as_unit(c) for c, _ in photo_pairs])
  for y_channel in (False, True):
    options = dict(crop_border=CROP, y_channel=y_channel)
    assert np.all(np.isposinf(metrics.psnr(clean, clean, **options)))
    np.testing.assert_allclose(metrics.ssim(clean, clean, **options), 1.0, atol=1e-6)
    np.testing.assert_allclose(metrics.ms_ssim(clean, clean, **options), 1.0, atol=1e-6)


@pytest.mark.parametrize("metric", [metrics.psnr, metrics.ssim, metrics.ms_ssim])
def test_batch_matches_single_images_and_jits(photo_pairs, metric):
  clean = jnp.stack([_as_unit(c) for c, _ in photo_pairs])
  degraded = jnp.stack([_as_unit(d) for _, d in photo_pairs])
  batched = metric(clean, degraded, crop_border=CROP, y_channel=True)
  singles = [metric(c, d, crop_border=CROP, y_channel=True) for c, d in zip(clean, degraded)]
  np.testing.assert_allclose(batched, singles, rtol=1e-6)
  inside_jit = jax.jit(lambda a, b: metric(a, b, crop_border=CROP, y_channel=True))(clean, degraded)
  np.testing.assert_allclose(inside_jit, batched, rtol=1e-6)


@pytest.mark.parametrize("metric", [metrics.psnr, metrics.ssim, metrics.ms_ssim])
def test_errors(metric):
  image = jnp.zeros((200, 200, 3))
  with pytest.raises(ValueError, match="same shape"):
    metric(image, jnp.zeros((200, 201, 3)))
  with pytest.raises(ValueError, match="crop_border"):
    metric(image, image, crop_border=100)
  with pytest.raises(ValueError, match="RGB"):
    metric(image[..., :1], image[..., :1], y_channel=True)
  with pytest.raises(ValueError, match="HWC"):
    metric(image[..., 0], image[..., 0])


def test_ssim_needs_the_window_to_fit():
  with pytest.raises(ValueError, match="at least 11x11"):
    metrics.ssim(jnp.zeros((10, 40, 3)), jnp.zeros((10, 40, 3)))
  np.testing.assert_allclose(metrics.ssim(jnp.ones((11, 11, 1)), jnp.ones((11, 11, 1))), 1.0)
