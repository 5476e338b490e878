"""The MS-SSIM loss against tf.image.ssim_multiscale, hand cases and finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data, filters
import tensorflow as tf

from restore_jax.losses import ms_ssim_loss
from restore_jax.losses import ssim as ssim_loss_module

# Wang, Simoncelli & Bovik (2003), finest scale first: tf's default power factors.
PUBLISHED_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _photo_batch(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """(clean, distorted) float32 batches in [0, 1], not on the 8-bit grid.

  Noise (unclipped, so slightly outside [0, 1]), blur, and a colour cast plus
  noise: three different kinds and amounts of damage.
  """
  rng = np.random.default_rng(0)
  astronaut = data.astronaut()[100:100 + height, 150:150 + width] / 255.0
  coffee = data.coffee()[150:150 + height, 200:200 + width] / 255.0
  chelsea = data.chelsea()[80:80 + height, 150:150 + width] / 255.0
  noisy = astronaut + rng.normal(0, 0.06, astronaut.shape)
  blurred = filters.gaussian(coffee, sigma=1.2, channel_axis=-1)
  cast = np.clip(chelsea * np.array([1.1, 0.95, 0.8]) + rng.normal(0, 0.02, chelsea.shape), 0, 1)
  clean = np.stack([astronaut, coffee, chelsea]).astype(np.float32)
  distorted = np.stack([noisy, blurred, cast]).astype(np.float32)
  return clean, distorted


def _tf_ms_ssim(pred, target, **options) -> np.ndarray:
  """tf.image.ssim_multiscale on [0, 1] images, one value per image."""
  return tf.image.ssim_multiscale(tf.constant(pred), tf.constant(target), max_val=1.0, **options).numpy()


@functools.lru_cache(maxsize=None)
def _jitted_loss(**options):
  return jax.jit(functools.partial(ms_ssim_loss, **options))


def test_five_scales_match_tensorflow_defaults():
  # 176 x 170: 176 -> 88 -> 44 -> 22 -> 11 and 170 -> 85 -> 43 -> 22 -> 11, so the
  # 11-px window just fits the coarsest scale and odd sides are padded on the way.
  clean, distorted = _photo_batch(176, 170)
  loss = _jitted_loss(scales=5)(distorted, clean)
  expected = _tf_ms_ssim(distorted, clean)  # tf's defaults: 11 px, sigma 1.5, the 5 weights
  np.testing.assert_allclose(loss, 1.0 - expected.mean(), atol=1e-4)
  assert expected.max() < 0.99 and np.ptp(expected) > 0.02  # real, different distortions
  assert loss.shape == () and loss.dtype == jnp.float32


def _renormalised(scales: int) -> list[float]:
  """The finest `scales` weights, scaled to the published total (0.0448 + ... + 0.1333 = 1.0001)."""
  kept = PUBLISHED_WEIGHTS[:scales]
  return [w * 1.0001 / sum(kept) for w in kept]


@pytest.mark.parametrize("options, height, width", [
    ({}, 64, 64),  # the defaults: 3 scales of the 11-px window on a 64-px crop
    ({"scales": 4}, 128, 128),
    ({"scales": 4, "window_size": 7}, 64, 64),
    ({"scales": 5, "window_size": 5, "sigma": 1.0}, 72, 67),
])
def test_reduced_settings_match_tensorflow(options, height, width):
  clean, distorted = _photo_batch(height, width)
  scales = options.get("scales", 3)
  expected = _tf_ms_ssim(distorted, clean, power_factors=_renormalised(scales),
                         filter_size=options.get("window_size", 11),
                         filter_sigma=options.get("sigma", 1.5))
  loss = _jitted_loss(**options)(distorted, clean)
  np.testing.assert_allclose(loss, 1.0 - expected.mean(), atol=1e-4)
  assert expected.max() < 0.99


def test_default_weights_are_the_published_ones_renormalised():
  # (0.0448, 0.2856, 0.3001) * 1.0001 / 0.6305, by hand.
  np.testing.assert_allclose(ssim_loss_module.ms_ssim_weights(3), (0.071062, 0.453019, 0.476019),
                             atol=1e-6)
  # Five scales are the published weights themselves (tf's default power factors).
  np.testing.assert_allclose(ssim_loss_module.ms_ssim_weights(5), PUBLISHED_WEIGHTS, rtol=1e-12)
  np.testing.assert_allclose(ssim_loss_module.ms_ssim_weights(1), (1.0001,), rtol=1e-12)


def test_flat_images_hand_computed():
  # Flat images have no variance at any scale: every contrast-structure factor is
  # C2 / C2 = 1 and the coarsest SSIM is the luminance (2ab + C1) / (a^2 + b^2 + C1),
  # C1 = (0.01 * 1)^2, per channel; the loss is 1 - mean_c l_c ** w_3.
  levels_pred, levels_target = np.array([0.3, 0.0, 0.5]), np.array([0.7, 0.0, 0.5])
  pred = np.broadcast_to(levels_pred, (2, 64, 64, 3)).astype(np.float32)
  target = np.broadcast_to(levels_target, (2, 64, 64, 3)).astype(np.float32)
  c1 = 1e-4
  luminance = (2 * levels_pred * levels_target + c1) / (levels_pred**2 + levels_target**2 + c1)
  weight = 0.3001 * 1.0001 / (0.0448 + 0.2856 + 0.3001)
  expected = 1.0 - np.mean(luminance**weight)  # (1 - (0.4201 / 0.5801) ** 0.476) / 3 = 0.0468
  np.testing.assert_allclose(_jitted_loss()(pred, target), expected, rtol=1e-5)
  np.testing.assert_allclose(_jitted_loss()(target, target), 0.0, atol=1e-6)


def test_identical_and_anticorrelated_images():
  clean, _ = _photo_batch(64, 64)
  np.testing.assert_allclose(_jitted_loss()(clean, clean), 0.0, atol=1e-6)
  # The negative: covariance = -variance, every contrast-structure factor < 0, clipped to 0.
  np.testing.assert_allclose(_jitted_loss()(1.0 - clean, clean), 1.0, atol=1e-6)


@pytest.fixture(scope="module")
def loss_and_grad():
  return jax.jit(jax.value_and_grad(ms_ssim_loss))


@pytest.mark.parametrize("case", [
    "flat_pair", "black_pair", "identical", "anticorrelated", "independent_noise", "black_vs_photo"])
def test_gradient_is_finite_everywhere(loss_and_grad, case):
  clean, _ = _photo_batch(64, 64)
  noise = np.random.default_rng(5).random(clean.shape, dtype=np.float32)
  pred, target = {
      "flat_pair": (np.full_like(clean, 0.3), np.full_like(clean, 0.7)),
      "black_pair": (np.zeros_like(clean), np.zeros_like(clean)),
      "identical": (clean, clean),
      "anticorrelated": (1.0 - clean, clean),
      # Factors near 0 (0.002 to 0.1), one of them negative and clipped.
      "independent_noise": (noise, clean),
      "black_vs_photo": (np.zeros_like(clean), clean),
  }[case]
  loss, grad = loss_and_grad(pred, target)
  assert np.isfinite(loss) and -1e-6 <= loss <= 1.0 + 1e-6
  assert np.all(np.isfinite(grad))


def test_safe_power_hand_values():
  # w = 0.5: the chord from (0, 0) to (1e-3, sqrt(1e-3)) below 1e-3, sqrt above, 0 below 0.
  power = jax.jit(jax.vmap(jax.value_and_grad(lambda x: ssim_loss_module._safe_power(x, 0.5))))
  values, slopes = power(jnp.array([-0.2, 0.0, 5e-4, 0.25, 1.0]))
  chord_slope = 1e-3**-0.5  # sqrt(1e-3) / 1e-3 = 31.62
  np.testing.assert_allclose(values, [0.0, 0.0, 5e-4 * chord_slope, 0.5, 1.0], rtol=1e-6)
  # d sqrt(x) / dx = 1 / (2 sqrt(x)): 1 at 0.25, 0.5 at 1. At exactly 0, max(x, 0) splits it.
  np.testing.assert_allclose(slopes, [0.0, 0.5 * chord_slope, chord_slope, 1.0, 0.5], rtol=1e-6)


@pytest.mark.parametrize("options", [
    {"scales": 3, "window_size": 3, "sigma": 1.0},  # 10x11 -> 5x6 -> 3x3: two odd-side paddings
    {"scales": 2, "window_size": 5},
])
def test_gradient_matches_central_differences(options):
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    target = rng.random((1, 10, 11, 2))
    pred = np.clip(target + rng.normal(0, 0.15, target.shape), 0, 1)
    loss_fn = functools.partial(ms_ssim_loss, **options)
    grad = jax.jit(jax.grad(loss_fn))(pred, target)
    # All one-element perturbations at once: (2 * size, *shape) images through vmap.
    step = 1e-6
    basis = np.eye(pred.size).reshape(pred.size, *pred.shape) * step
    shifted = np.concatenate([pred + basis, pred - basis])
    losses = jax.jit(jax.vmap(lambda p: loss_fn(p, target)))(shifted)
    finite_difference = ((losses[:pred.size] - losses[pred.size:]) / (2 * step)).reshape(pred.shape)
    assert grad.dtype == jnp.float64
    assert np.abs(finite_difference).max() > 1e-3  # a real signal: no rounding to 8-bit levels
    np.testing.assert_allclose(grad, finite_difference, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("options, shape, message", [
    ({}, (1, 40, 64, 3), r"at least 41x41 .*got 40x64.*scales <= 2"),
    ({"scales": 5}, (1, 64, 64, 3), r"loss.ms_ssim.scales=5 and loss.ms_ssim.window_size=11.*161x161"),
    ({"scales": 5, "window_size": 5}, (1, 64, 64, 3), r"65x65.*scales <= 4"),
    ({"scales": 0}, (1, 64, 64, 3), r"loss.ms_ssim.scales must be an integer from 1 to 5"),
    ({"scales": 6}, (1, 64, 64, 3), r"loss.ms_ssim.scales"),
    ({"scales": 2.0}, (1, 64, 64, 3), r"loss.ms_ssim.scales"),
    ({"window_size": 4}, (1, 64, 64, 3), r"loss.ms_ssim.window_size must be an odd integer >= 3"),
    ({"window_size": 1}, (1, 64, 64, 3), r"loss.ms_ssim.window_size"),
    ({"sigma": 0.0}, (1, 64, 64, 3), r"loss.ms_ssim.sigma must be > 0"),
    ({}, (64, 64, 3), r"NHWC"),
])
def test_bad_settings_and_shapes_raise(options, shape, message):
  images = jnp.zeros(shape)
  with pytest.raises(ValueError, match=message):
    ms_ssim_loss(images, images, **options)


def test_shape_mismatch_raises():
  with pytest.raises(ValueError, match="same shape"):
    ms_ssim_loss(jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 65, 3)))


def test_bfloat16_inputs_give_a_float32_loss():
  clean, distorted = _photo_batch(64, 64)
  loss = _jitted_loss()(jnp.asarray(distorted, jnp.bfloat16), jnp.asarray(clean, jnp.bfloat16))
  assert loss.dtype == jnp.float32
  expected = 1.0 - _tf_ms_ssim(distorted, clean, power_factors=_renormalised(3)).mean()
  np.testing.assert_allclose(loss, expected, atol=2e-2)  # bf16 keeps ~3 significant digits
