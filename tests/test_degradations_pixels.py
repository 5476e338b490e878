"""Per-pixel families: noise statistics, haze, exposure, JPEG, grayscale and the pixel shuffle, against
formulas, statistics with stated tolerances, Pillow and dm-pix."""

import io

import dm_pix
import numpy as np
from PIL import Image
import pytest
import skimage.color
import skimage.data

from restore_jax.degradations import make_degradation


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
  return skimage.data.coffee()[100:164, 200:296].astype(np.float32) / 255.0  # 64 x 96.


def _flat(value: float, size: int = 128) -> np.ndarray:
  return np.full((size, size, 3), value, np.float32)


# Noise. Tolerances are 4 standard errors of the estimate: for n samples of variance v, the mean's standard
# error is sqrt(v / n) and the sample variance's is about v * sqrt(2 / n) (Gaussian; Poisson adds 1 / lambda
# to the kurtosis, negligible here).

def test_gaussian_noise_mean_and_variance():
  sigma, n = 0.05, 128 * 128 * 3
  out = make_degradation(dict(name="gaussian_noise", sigma=sigma))(_flat(0.5), np.random.default_rng(0))["input"]
  noise = out.astype(np.float64) - 0.5
  assert abs(noise.mean()) < 4 * sigma / np.sqrt(n)
  assert abs(noise.var() - sigma ** 2) < 4 * sigma ** 2 * np.sqrt(2 / n)
  # Colour noise: independent channels (correlation within 4 / sqrt(pixels)).
  per_channel = noise.reshape(-1, 3)
  assert abs(np.corrcoef(per_channel.T)[0, 1]) < 4 / np.sqrt(128 * 128)


def test_gray_gaussian_noise_is_the_same_on_every_channel():
  out = make_degradation(dict(name="gaussian_noise", sigma=0.05, gray_prob=1.0))(
      _flat(0.5), np.random.default_rng(0))["input"]
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  assert out[..., 0].std() > 0.04


def test_random_sigma_is_drawn_per_sample_within_its_range():
  degrade = make_degradation(dict(name="gaussian_noise", sigma=(0.02, 0.08)))
  stds = [degrade(_flat(0.5, 64), np.random.default_rng(s))["input"].std() for s in range(20)]
  # 12288 samples each: the sample std is within 3% of sigma (4 standard errors = 4 / sqrt(2 n) = 2.6%).
  assert min(stds) > 0.02 * 0.97 and max(stds) < 0.08 * 1.03
  assert max(stds) - min(stds) > 0.03


def test_noise_is_clipped_to_the_unit_range():
  out = make_degradation(dict(name="gaussian_noise", sigma=0.5))(_flat(0.95), np.random.default_rng(0))["input"]
  assert out.min() == 0.0 and out.max() == 1.0
  out = make_degradation(dict(name="poisson_noise", peak=2.0))(_flat(0.02), np.random.default_rng(0))["input"]
  assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("value, peak", [(0.1, 200.0), (0.4, 50.0), (0.6, 100.0)])  # Clipping at 1 > 5 sd away.
def test_poisson_variance_is_mean_over_peak(value, peak):
  n = 128 * 128 * 3
  out = make_degradation(dict(name="poisson_noise", peak=peak))(_flat(value), np.random.default_rng(1))["input"]
  out = out.astype(np.float64)
  variance = value / peak
  assert abs(out.mean() - value) < 4 * np.sqrt(variance / n)
  assert abs(out.var() - variance) < 4 * variance * np.sqrt(2 / n)
  # Photon counts: every value is a whole number of 1 / peak.
  counts = out * peak
  np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)


def test_poisson_gain_and_gray():
  n, value, peak, gain = 128 * 128, 0.5, 100.0, 2.0
  out = make_degradation(dict(name="poisson_noise", peak=peak, gain=gain, gray_prob=1.0))(
      _flat(value), np.random.default_rng(2))["input"].astype(np.float64)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])  # Gray: one plane (of the luma) on every channel.
  variance = gain ** 2 * value / peak
  assert abs(out[..., 0].var() - variance) < 4 * variance * np.sqrt(2 / n)


# Haze.

def test_haze_transmission_one_is_the_identity(photo):
  for depth in ("uniform", "ramp"):
    out = make_degradation(dict(name="haze", transmission=1.0, depth=depth))(photo, np.random.default_rng(0))
    np.testing.assert_array_equal(out["input"], photo)


def test_haze_transmission_zero_is_the_airlight(photo):
  out = make_degradation(dict(name="haze", transmission=0.0, airlight=0.8))(photo, np.random.default_rng(0))
  np.testing.assert_allclose(out["input"], 0.8, atol=1e-7)


def test_haze_follows_the_scattering_model(photo):
  out = make_degradation(dict(name="haze", transmission=0.6, airlight=0.9))(photo, np.random.default_rng(0))
  np.testing.assert_allclose(out["input"], photo * 0.6 + 0.9 * (1 - 0.6), atol=1e-6)


def test_haze_ramp_is_a_depth_gradient():
  degrade = make_degradation(dict(name="haze", transmission=(0.2, 0.9), airlight=1.0, depth="ramp"))
  black = np.zeros((48, 64, 3), np.float32)
  for seed in range(5):
    t = 1.0 - degrade(black, np.random.default_rng(seed))["input"][..., 0]  # I = A (1 - t) with J = 0, A = 1.
    assert 0.2 - 1e-6 <= t.min() < t.max() <= 0.9 + 1e-6
    # Koschmieder: log t is a linear function of position (a plane), to float32 precision.
    y, x = np.mgrid[0:48, 0:64]
    design = np.stack([np.ones(t.size), x.ravel(), y.ravel()], 1)
    residual = np.linalg.lstsq(design, np.log(t.ravel()), rcond=None)[1]
    assert residual[0] / t.size < 1e-9


# Exposure.

@pytest.mark.parametrize("gamma, exposure", [(2.2, 0.4), (0.5, 1.5), (1.0, 1.0)])
def test_exposure_matches_dm_pix_adjust_gamma(photo, gamma, exposure):
  out = make_degradation(dict(name="exposure", gamma=gamma, exposure=exposure))(photo, np.random.default_rng(0))
  theirs = np.clip(np.asarray(dm_pix.adjust_gamma(photo, gamma, gain=exposure)), 0, 1)
  np.testing.assert_allclose(out["input"], theirs, atol=2e-6)


# JPEG.

def _pillow_jpeg(pixels: np.ndarray, **options) -> np.ndarray:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG", **options)
  return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.mark.parametrize("quality", [10, 55, 95])
def test_jpeg_is_pillows_codec(photo, quality):
  out = make_degradation(dict(name="jpeg", quality=quality))(photo, np.random.default_rng(0))["input"]
  pixels = np.round(photo * 255).astype(np.uint8)
  expected = _pillow_jpeg(pixels, quality=quality)  # Pillow's defaults: 4:2:0 chroma for RGB.
  np.testing.assert_array_equal(np.round(out * 255).astype(np.uint8), expected)
  assert (out * 255 == np.round(out * 255)).all()  # Decoded 8-bit levels, exactly.
  full_chroma = make_degradation(dict(name="jpeg", quality=quality, subsampling="4:4:4"))(
      photo, np.random.default_rng(0))["input"]
  np.testing.assert_array_equal(np.round(full_chroma * 255).astype(np.uint8),
                                _pillow_jpeg(pixels, quality=quality, subsampling=0))


def test_jpeg_quality_is_drawn_from_its_range(photo):
  pixels = np.round(photo * 255).astype(np.uint8)
  by_quality = {q: _pillow_jpeg(pixels, quality=q).tobytes() for q in range(40, 46)}
  degrade = make_degradation(dict(name="jpeg", quality=(40, 45)))
  seen = set()
  for seed in range(40):
    out = np.round(degrade(photo, np.random.default_rng(seed))["input"] * 255).astype(np.uint8).tobytes()
    seen.update(q for q, data in by_quality.items() if data == out)
  assert seen == set(range(40, 46))


def test_jpeg_of_a_gray_image(photo):
  chain = dict(name="chain", steps=("gray", "jpeg"), gray=dict(name="grayscale"), jpeg=dict(name="jpeg", quality=30))
  out = make_degradation(chain)(photo, np.random.default_rng(0))["input"]
  gray = np.round((photo @ np.array([0.299, 0.587, 0.114], np.float32)) * 255).astype(np.uint8)
  np.testing.assert_array_equal(np.round(out[..., 0] * 255).astype(np.uint8), _pillow_jpeg(gray, quality=30))


# Grayscale.

def test_grayscale_is_bt601_luma(photo):
  out = make_degradation(dict(name="grayscale"))(photo, np.random.default_rng(0))["input"]
  assert out.shape == (64, 96, 1)
  r, g, b = photo[..., 0], photo[..., 1], photo[..., 2]
  np.testing.assert_allclose(out[..., 0], 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-6)
  # Pillow's convert("L") is BT.601 on 8-bit levels, rounded: within half a level plus float error.
  pixels = np.round(photo * 255).astype(np.uint8)
  pillow = np.asarray(Image.fromarray(pixels).convert("L")).astype(np.float64)
  ours = make_degradation(dict(name="grayscale"))(pixels / np.float32(255), np.random.default_rng(0))["input"]
  assert np.abs(ours[..., 0] * 255 - pillow).max() <= 0.5 + 1e-3
  # dm-pix's rec601 weights are rounded to 4 digits (0.2989).
  np.testing.assert_allclose(out, np.asarray(dm_pix.rgb_to_grayscale(photo)), atol=2e-4)
  # Not scikit-image's rgb2gray, which weighs by BT.709.
  assert np.abs(out[..., 0] - skimage.color.rgb2gray(photo)).max() > 0.01


# Pixel shuffle.

def _index_image(height: int, width: int) -> np.ndarray:
  """Each pixel's own index in channel 0 (exact in float32 below 2^24), so where it went can be read back."""
  index = np.arange(height * width, dtype=np.float32).reshape(height, width) / np.float32(height * width)
  return np.stack([index, 1 - index, np.full_like(index, 0.5)], -1)


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5, 0.9])
def test_pixel_shuffle_moves_pixels_within_5x5_at_the_rate(rate):
  height, width = 128, 128
  n = height * width
  target = _index_image(height, width)
  degrade = make_degradation(dict(name="pixel_shuffle", rate=rate))
  offsets = set()
  for seed in range(3):
    out = degrade(target, np.random.default_rng(seed))["input"]
    # Only moved: the output is a permutation of the input's pixels (the multiset of values is the same).
    np.testing.assert_array_equal(np.sort(out.reshape(-1, 3), axis=0), np.sort(target.reshape(-1, 3), axis=0))
    source = np.round(out[..., 0] * n).astype(np.int64)
    np.testing.assert_array_equal(out, target.reshape(-1, 3)[source.ravel()].reshape(out.shape))
    sy, sx = np.divmod(source, width)
    y, x = np.mgrid[0:height, 0:width]
    dy, dx = sy - y, sx - x
    assert np.abs(dy).max() <= 2 and np.abs(dx).max() <= 2  # Inside each pixel's 5 x 5 neighbourhood.
    moved = (dy != 0) | (dx != 0)
    # The moved fraction is a sum of n per-pixel coin flips of probability `rate` (correlated only within a
    # 3 x 3 tile): within 4 binomial standard errors.
    assert abs(moved.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / n)
    offsets.update(zip(dy[moved].tolist(), dx[moved].tolist()))
  assert offsets == {(a, b) for a in range(-2, 3) for b in range(-2, 3)} - {(0, 0)}  # All 24 neighbours.


def test_pixel_shuffle_presets_and_extremes(photo):
  n = 64 * 96
  target = _index_image(64, 96)
  for config, rate in ((dict(preset="low"), 0.25), (dict(preset="high"), 0.5)):
    out = make_degradation(dict(name="pixel_shuffle", **config))(target, np.random.default_rng(0))["input"]
    assert abs((out != target).any(-1).mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / n)
  assert np.array_equal(make_degradation(dict(name="pixel_shuffle", rate=0.0))(
      photo, np.random.default_rng(0))["input"], photo)
  everything = make_degradation(dict(name="pixel_shuffle", rate=1.0))(target, np.random.default_rng(0))["input"]
  assert (everything != target).any(-1).mean() > 0.999  # All but pixels alone in a corner tile move.

