"""Losses against hand-computed values, torch, and finite differences."""


import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from configs import common
from restore_jax import losses

# ---------------------------------------------------------------- pixel losses

PRED = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
TARGET = np.array([[1.0, 1.0], [0.0, 0.0]], np.float32)  # differences -1, 0, 2, 3


def test_pixel_losses_hand_computed():
  np.testing.assert_allclose(losses.mse(PRED, TARGET), (1 + 0 + 4 + 9) / 4)
  np.testing.assert_allclose(losses.l1(PRED, TARGET), (1 + 0 + 2 + 3) / 4)
  expected = sum(math.sqrt(d * d + 1e-6) for d in (-1, 0, 2, 3)) / 4
  np.testing.assert_allclose(losses.charbonnier(PRED, TARGET), expected, rtol=1e-6)
  # eps = 4 with differences 3 and 0: (sqrt(9 + 16) + sqrt(16)) / 2 = 4.5.
  np.testing.assert_allclose(
      losses.charbonnier(np.array([3.0, 0.0]), np.zeros(2), eps=4.0), 4.5)


def test_pixel_losses_match_torch_on_nhwc():
  rng = np.random.default_rng(0)
  pred, target = rng.random((2, 2, 5, 4, 3), dtype=np.float32)
  tp, tt = torch.from_numpy(pred), torch.from_numpy(target)
  np.testing.assert_allclose(losses.mse(pred, target), F.mse_loss(tp, tt).item(), rtol=1e-5)
  np.testing.assert_allclose(losses.l1(pred, target), F.l1_loss(tp, tt).item(), rtol=1e-5)


def test_term_registry_builds_the_weighted_terms_a_config_names():
  config = common.base_config().loss
  config.terms = ml_collections.ConfigDict({"l1": 1.0, "mse": 0.0, "ms_ssim": 0.84, "cosine": 0.5})
  terms = losses.make_terms(config)
  assert sorted(terms) == ["cosine", "l1", "ms_ssim"]  # A zero weight switches a term off.
  pred = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
  target = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
  weight, l1_term = terms["l1"]
  assert weight == 1.0
  np.testing.assert_allclose(l1_term.fn(pred, target, {}), np.mean(np.abs(pred - target)), rtol=1e-6)
  assert terms["cosine"][0] == 0.5 and terms["ms_ssim"][1].frozen == ()
  config.terms = ml_collections.ConfigDict({"l2": 1.0})
  with pytest.raises(ValueError, match="loss.terms.l2"):
    losses.make_terms(config)
  config.terms = ml_collections.ConfigDict({"l1": -1.0})
  with pytest.raises(ValueError, match="loss.terms.l1"):
    losses.make_terms(config)


def test_perceptual_term_needs_vgg19_and_says_so():
  config = common.base_config().loss
  config.terms = ml_collections.ConfigDict({"perceptual": 1.0})
  terms = losses.make_terms(config)
  assert terms["perceptual"][1].frozen == ("vgg19",)


REAL_SCORES = np.array([2.0, -1.0], np.float32)
FAKE_SCORES = np.array([0.5, -3.0], np.float32)


def test_wasserstein_estimate_hand_computed():
  # mean(real) = 0.5, mean(fake) = -1.25.
  np.testing.assert_allclose(losses.wasserstein_estimate(REAL_SCORES, FAKE_SCORES), 1.75)


# ---------------------------------------------------------------- gradient penalty


def test_gradient_penalty_linear_critic_is_exact():
  # D(x) = sum(w * x): the gradient is w at every point, ||w|| = sqrt(4 * 1.5^2) = 3.
  w = jnp.full((2, 2, 1), 1.5)
  critic_fn = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
  real = jax.random.uniform(jax.random.key(1), (5, 2, 2, 1))
  fake = jax.random.uniform(jax.random.key(2), (5, 2, 2, 1))
  penalty, aux = jax.jit(losses.gradient_penalty, static_argnums=0)(
      critic_fn, real, fake, jax.random.key(3))
  np.testing.assert_allclose(penalty, (3.0 - 1.0)**2, rtol=1e-6)
  np.testing.assert_allclose(aux["gp_grad_norm"], 3.0, rtol=1e-6)


def test_gradient_penalty_interpolates_uniformly_per_sample():
  # D(x) = sum(x^2) / 2 has gradient x; with real = 1 and fake = 0 the point is
  # eps_i everywhere in sample i, so its gradient norm is eps_i (one element).
  # With eps ~ U[0, 1): E[norm] = 1/2 and E[(eps - 1)^2] = 1/3.
  n = 20000
  critic_fn = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))
  real, fake = jnp.ones((n, 1, 1, 1)), jnp.zeros((n, 1, 1, 1))
  penalty, aux = losses.gradient_penalty(critic_fn, real, fake, jax.random.key(0))
  assert abs(float(aux["gp_grad_norm"]) - 0.5) < 0.01
  assert abs(float(penalty) - 1 / 3) < 0.01
  # A whole-image sample: the same eps for all its pixels, so the norm is
  # eps * sqrt(H W C) < sqrt(12), and (with one sample) penalty = (norm - 1)^2.
  penalty, aux = losses.gradient_penalty(
      critic_fn, jnp.ones((1, 2, 2, 3)), jnp.zeros((1, 2, 2, 3)), jax.random.key(5))
  assert 0.0 <= float(aux["gp_grad_norm"]) < math.sqrt(12)
  np.testing.assert_allclose(penalty, (aux["gp_grad_norm"] - 1.0)**2, rtol=1e-6)
  # A different key draws a different eps.
  _, aux_other = losses.gradient_penalty(
      critic_fn, jnp.ones((1, 2, 2, 3)), jnp.zeros((1, 2, 2, 3)), jax.random.key(6))
  assert float(aux["gp_grad_norm"]) != float(aux_other["gp_grad_norm"])


def test_gradient_penalty_zero_gradient_is_finite():
  # A constant critic has zero input gradient: penalty 1, and its params
  # gradient must stay finite (sqrt at 0 would give NaN).
  def penalty_of(scale):
    critic_fn = lambda x: scale * jnp.zeros(x.shape[0]) + 0.0 * jnp.sum(x, axis=(1, 2, 3))
    return losses.gradient_penalty(critic_fn, jnp.ones((2, 2, 2, 1)), jnp.zeros((2, 2, 2, 1)),
                                   jax.random.key(0))[0]
  np.testing.assert_allclose(penalty_of(1.0), 1.0)
  assert np.isfinite(jax.grad(penalty_of)(1.0))


class TinyCritic(nn.Module):
  """Conv + tanh + dense: a small nonlinear critic with one score per sample."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), dtype=jnp.float64, param_dtype=jnp.float64)(x)
    x = jnp.tanh(x)
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(1, dtype=jnp.float64, param_dtype=jnp.float64)(x)[:, 0]


@pytest.fixture(scope="module")
def tiny_critic_x64():
  """Critic, params and images, all in float64; x64 is switched on only inside tests."""
  with jax.enable_x64(True):
    critic = TinyCritic()
    images = jax.random.normal(jax.random.key(0), (3, 4, 4, 2), dtype=jnp.float64)
    params = critic.init(jax.random.key(1), images)
    fake = jax.random.normal(jax.random.key(2), (3, 4, 4, 2), dtype=jnp.float64)
  return critic, params, images, fake


def _central_difference_grad_norms(score_fn, images, step=1e-5):
  """Per-sample ||d D / d x|| by central differences, one input element at a time."""
  flat = images.reshape(images.shape[0], -1)
  norms = []
  for i in range(flat.shape[0]):
    grad = np.zeros(flat.shape[1])
    for j in range(flat.shape[1]):
      plus, minus = flat.copy(), flat.copy()
      plus[i, j] += step
      minus[i, j] -= step
      scores_plus = score_fn(plus.reshape(images.shape))
      scores_minus = score_fn(minus.reshape(images.shape))
      grad[j] = (scores_plus[i] - scores_minus[i]) / (2 * step)
    norms.append(np.linalg.norm(grad))
  return np.array(norms)


def test_gradient_penalty_matches_finite_differences(tiny_critic_x64):
  critic, params, images, _ = tiny_critic_x64
  with jax.enable_x64(True):
    score_fn = jax.jit(lambda x: critic.apply(params, x))
    # real == fake pins the interpolated point to the images whatever eps is.
    penalty, aux = losses.gradient_penalty(score_fn, images, images, jax.random.key(7))
    norms = _central_difference_grad_norms(lambda x: np.asarray(score_fn(x)), np.asarray(images))
  assert penalty.dtype == jnp.float64
  np.testing.assert_allclose(aux["gp_grad_norm"], norms.mean(), rtol=1e-7)
  np.testing.assert_allclose(penalty, np.mean((norms - 1.0)**2), rtol=1e-7)


def test_gradient_penalty_is_differentiable_in_critic_params(tiny_critic_x64):
  critic, params, real, fake = tiny_critic_x64
  with jax.enable_x64(True):
    key = jax.random.key(11)  # fixed key: the same interpolation points every call

    @jax.jit
    def penalty_of(p):
      return losses.gradient_penalty(lambda x: critic.apply(p, x), real, fake, key)[0]

    grads = jax.grad(penalty_of)(params)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert any(np.any(leaf != 0) for leaf in leaves)

    kernel = params["params"]["Dense_0"]["kernel"]
    step = 1e-6
    def with_kernel_entry(delta):
      bumped = kernel.at[3, 0].add(delta)
      return penalty_of({"params": {**params["params"], "Dense_0": {
          **params["params"]["Dense_0"], "kernel": bumped}}})
    finite_difference = (with_kernel_entry(step) - with_kernel_entry(-step)) / (2 * step)
    np.testing.assert_allclose(
        grads["params"]["Dense_0"]["kernel"][3, 0], finite_difference, rtol=1e-6)


def test_x64_does_not_leak():
  assert not jax.config.jax_enable_x64
  assert jnp.zeros(1).dtype == jnp.float32


def test_gradient_penalty_shape_mismatch():
  with pytest.raises(ValueError, match="same shape"):
    losses.gradient_penalty(lambda x: x.sum((1, 2, 3)), jnp.zeros((2, 4, 4, 3)),
                            jnp.zeros((2, 8, 8, 3)), jax.random.key(0))


# ---------------------------------------------------------------- perceptual


def _identity_and_pool_features(images):
  """Stand-in for VGG features: the image itself and its 2x2 average pool."""
  return {"identity": images, "pool": nn.avg_pool(images, (2, 2), strides=(2, 2))}


def test_perceptual_loss_hand_computed():
  pred = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
  target = jnp.zeros_like(pred)
  weights = {"identity": 0.5, "pool": 2.0}
  # identity: mse = (1 + 4 + 9 + 16) / 4 = 7.5, l1 = 2.5; pool: the mean 2.5 -> mse 6.25, l1 2.5.
  loss = losses.perceptual_loss(_identity_and_pool_features, pred, target, layer_weights=weights)
  np.testing.assert_allclose(loss, 0.5 * 7.5 + 2.0 * 6.25, rtol=1e-6)
  loss_l1 = losses.perceptual_loss(
      _identity_and_pool_features, pred, target, layer_weights=weights, criterion="l1")
  np.testing.assert_allclose(loss_l1, 0.5 * 2.5 + 2.0 * 2.5, rtol=1e-6)
  only_pool = losses.perceptual_loss(
      _identity_and_pool_features, pred, target, layer_weights={"pool": 1.0})
  np.testing.assert_allclose(only_pool, 6.25, rtol=1e-6)


def test_perceptual_loss_gradient_flows_only_through_pred():
  pred = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
  target = jnp.zeros_like(pred)
  loss_fn = lambda p, t: losses.perceptual_loss(
      _identity_and_pool_features, p, t, layer_weights={"identity": 0.5, "pool": 2.0})
  grad_pred, grad_target = jax.grad(loss_fn, argnums=(0, 1))(pred, target)
  # identity: d/dp 0.5 * mean((p - t)^2) = (p - t) / 4; pool: d/dp 2 * (mean p)^2 = 4 * 2.5 / 4.
  expected = np.array([0.25, 0.5, 0.75, 1.0]) + 2.5
  np.testing.assert_allclose(grad_pred.ravel(), expected, rtol=1e-6)
  np.testing.assert_array_equal(grad_target, 0.0)


def test_perceptual_loss_errors():
  images = jnp.zeros((1, 2, 2, 1))
  with pytest.raises(ValueError, match="conv5_4"):
    losses.perceptual_loss(_identity_and_pool_features, images, images,
                           layer_weights={"conv5_4": 1.0})
  with pytest.raises(ValueError, match="criterion"):
    losses.perceptual_loss(_identity_and_pool_features, images, images,
                           layer_weights={"pool": 1.0}, criterion="cosine")
  with pytest.raises(ValueError, match="at least one layer"):
    losses.perceptual_loss(_identity_and_pool_features, images, images, layer_weights={})


def test_command_line_switches_on_a_term_the_recipe_does_not_list():
  """config_flags only overrides keys that exist: every built-in term is in loss.terms (0 = off) for this."""
  from absl import flags
  from ml_collections import config_flags
  from skimage.metrics import structural_similarity

  argv = ["prog", "--config=configs/denoise_unet.py:tiny", "--config.loss.terms.ms_ssim=0.5",
          "--config.loss.ms_ssim.scales=1"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True, sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  assert set(config.loss.terms) >= set(losses.TERMS)  # Listed, most at 0.
  terms = losses.make_terms(config.loss)
  assert sorted(terms) == ["l1", "ms_ssim"] and terms["ms_ssim"][0] == 0.5
  # One scale of MS-SSIM is SSIM: 1 - scikit-image's Gaussian-window SSIM, averaged over channels.
  rng = np.random.default_rng(2)
  pred = rng.random((1, 32, 32, 3), dtype=np.float32)
  target = np.clip(pred + 0.1 * rng.standard_normal(pred.shape, dtype=np.float32), 0, 1)
  expected = structural_similarity(pred[0], target[0], channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                   sigma=1.5, use_sample_covariance=False)
  np.testing.assert_allclose(terms["ms_ssim"][1].fn(pred, target, {}), 1 - expected, rtol=1e-4, atol=1e-5)
