"""Instance noise (against its schedule by hand and scipy's normal distribution) and feature matching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
import torch
import torch.nn.functional as F

from restore_jax import losses

# ---------------------------------------------------------------- instance noise


def test_sigma_anneals_linearly_to_zero():
  schedule = jax.jit(jax.vmap(lambda step: losses.instance_noise_sigma(step, initial=0.1, anneal_steps=200)))
  steps = jnp.array([0, 50, 100, 199, 200, 201, 10_000])  # traced steps
  # 0.1 * (1 - step / 200), then 0.
  np.testing.assert_allclose(schedule(steps), [0.1, 0.075, 0.05, 0.0005, 0.0, 0.0, 0.0], rtol=1e-5, atol=1e-9)
  sigma = losses.instance_noise_sigma(30, initial=0.2, anneal_steps=60)
  assert sigma.shape == () and sigma.dtype == jnp.float32
  np.testing.assert_allclose(sigma, 0.1, rtol=1e-6)
  np.testing.assert_array_equal(losses.instance_noise_sigma(0, initial=0.0, anneal_steps=10), 0.0)


@pytest.mark.parametrize("options, message", [
    ({"initial": -0.1, "anneal_steps": 10}, "loss.instance_noise.initial must be >= 0"),
    ({"initial": 0.1, "anneal_steps": 0}, "loss.instance_noise.anneal_steps must be an integer >= 1"),
    ({"initial": 0.1, "anneal_steps": 2.5}, "loss.instance_noise.anneal_steps"),
])
def test_sigma_errors(options, message):
  with pytest.raises(ValueError, match=message):
    losses.instance_noise_sigma(0, **options)


@pytest.fixture(scope="module")
def noisy_discriminator_input():
  """One jitted function: the noise for `step` of a 0.2 -> 0 schedule over 100 steps."""
  @jax.jit
  def noisy(images, key, step):
    return losses.add_instance_noise(images, key, losses.instance_noise_sigma(step, initial=0.2, anneal_steps=100))
  return noisy


IMAGE_SHAPE = (4, 32, 32, 3)  # one shape: the fixture compiles once


def test_noise_is_gaussian_with_the_scheduled_sigma(noisy_discriminator_input):
  images = jnp.full(IMAGE_SHAPE, 0.5)
  key = jax.random.key(0)
  # Step 25 of 100: sigma = 0.2 * 0.75 = 0.15.
  noise = np.asarray(noisy_discriminator_input(images, key, jnp.int32(25)) - images).ravel()
  assert stats.kstest(noise, stats.norm(loc=0.0, scale=0.15).cdf).pvalue > 1e-3
  # And clearly not the sigma of another step (0.2 at step 0, 0.1 at step 50).
  assert stats.kstest(noise, stats.norm(loc=0.0, scale=0.2).cdf).pvalue < 1e-6
  assert stats.kstest(noise, stats.norm(loc=0.0, scale=0.1).cdf).pvalue < 1e-6
  # Every element has its own draw (a few float32 values may repeat by chance).
  assert len(np.unique(noise)) > 0.99 * noise.size


def test_noise_follows_the_key_and_vanishes_after_annealing(noisy_discriminator_input):
  images = jax.random.uniform(jax.random.key(1), IMAGE_SHAPE)
  first = noisy_discriminator_input(images, jax.random.key(2), jnp.int32(10))
  again = noisy_discriminator_input(images, jax.random.key(2), jnp.int32(10))
  other = noisy_discriminator_input(images, jax.random.key(3), jnp.int32(10))
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)
  np.testing.assert_array_equal(noisy_discriminator_input(images, jax.random.key(2), jnp.int32(100)), images)
  assert first.dtype == images.dtype


# ---------------------------------------------------------------- feature matching

REAL_FEATURES = [np.array([[1.0, 2.0], [3.0, 4.0]], np.float32).reshape(1, 2, 2, 1),
                 np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2)]
FAKE_FEATURES = [np.array([[0.0, 2.5], [5.0, 3.0]], np.float32).reshape(1, 2, 2, 1),
                 np.array([0.0, 1.0], np.float32).reshape(1, 1, 1, 2)]


def test_feature_matching_hand_computed():
  # Layer 1: |diffs| = (1, 0.5, 2, 1), mean 1.125; layer 2: (1, 2), mean 1.5; mean over layers 1.3125.
  loss = losses.feature_matching_loss(REAL_FEATURES, FAKE_FEATURES)
  np.testing.assert_allclose(loss, (1.125 + 1.5) / 2, rtol=1e-7)
  assert loss.shape == () and loss.dtype == jnp.float32


def test_feature_matching_matches_torch_l1():
  rng = np.random.default_rng(0)
  shapes = [(2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 32)]
  real = [rng.normal(size=s).astype(np.float32) for s in shapes]
  fake = [rng.normal(size=s).astype(np.float32) for s in shapes]
  expected = np.mean([F.l1_loss(torch.from_numpy(f), torch.from_numpy(r)).item() for r, f in zip(real, fake)])
  np.testing.assert_allclose(jax.jit(losses.feature_matching_loss)(real, fake), expected, rtol=1e-5)


def test_feature_matching_gradient_reaches_only_the_fake_features():
  grad_real, grad_fake = jax.grad(losses.feature_matching_loss, argnums=(0, 1))(REAL_FEATURES, FAKE_FEATURES)
  # d/dfake of mean_l mean |fake - real| = sign(fake - real) / (elements in the layer * layers).
  np.testing.assert_allclose(grad_fake[0].ravel(), np.array([-1, 1, 1, -1]) / (4 * 2))
  np.testing.assert_allclose(grad_fake[1].ravel(), np.array([-1, 1]) / (2 * 2))
  for grad in grad_real:
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("real, fake, message", [
    (REAL_FEATURES, FAKE_FEATURES[:1], "same non-zero number"),
    ([], [], "same non-zero number"),
    (REAL_FEATURES, [FAKE_FEATURES[0], FAKE_FEATURES[0]], "layer 1"),
])
def test_feature_matching_errors(real, fake, message):
  with pytest.raises(ValueError, match=message):
    losses.feature_matching_loss(real, fake)
