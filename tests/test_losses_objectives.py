"""Adversarial objectives by name against their formulas on hand values, and torch's BCE with logits."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restore_jax import losses

REAL = np.array([2.0, -1.0], np.float32)  # mean 0.5
FAKE = np.array([0.5, -3.0], np.float32)  # mean -1.25


def _softplus(x: float) -> float:
  """-log(1 - sigmoid(x)) = log(1 + e^x), by hand."""
  return math.log1p(math.exp(x))


def _mean(values) -> float:
  return sum(values) / len(values)


# (name, label smoothing, d_loss, g_loss), worked out from each paper's formula.
HAND_CASES = [
    # E[D(fake)] - E[D(real)] = -1.25 - 0.5; -E[D(fake)].
    ("wgan", 0.0, -1.75, 1.25),
    ("wgan_gp", 0.0, -1.75, 1.25),
    # mean(relu(1 - real)) + mean(relu(1 + fake)) = mean(0, 2) + mean(1.5, 0); -E[D(fake)].
    ("hinge", 0.0, 1.0 + 0.75, 1.25),
    # 0.5 mean((real - 1)^2) + 0.5 mean(fake^2) = 0.5 * 2.5 + 0.5 * 4.625; 0.5 mean((fake - 1)^2).
    ("lsgan", 0.0, 1.25 + 2.3125, 0.5 * _mean([0.25, 16.0])),
    # Real target 0.9: 0.5 mean(1.1^2, 1.9^2) = 0.5 * 2.41.
    ("lsgan", 0.1, 1.205 + 2.3125, 0.5 * _mean([0.25, 16.0])),
    # -log sigmoid(real) = softplus(-real); -log(1 - sigmoid(fake)) = softplus(fake).
    ("vanilla", 0.0, _mean([_softplus(-2), _softplus(1)]) + _mean([_softplus(0.5), _softplus(-3)]),
     _mean([_softplus(-0.5), _softplus(3)])),
    # Real target t = 0.8: t softplus(-x) + (1 - t) softplus(x).
    ("vanilla", 0.2,
     _mean([0.8 * _softplus(-2) + 0.2 * _softplus(2), 0.8 * _softplus(1) + 0.2 * _softplus(-1)])
     + _mean([_softplus(0.5), _softplus(-3)]),
     _mean([_softplus(-0.5), _softplus(3)])),
    # RaGAN: real - mean(fake) = (3.25, 0.25), fake - mean(real) = (0, -3.5).
    # D = 0.5 [BCE((3.25, 0.25), 1) + BCE((0, -3.5), 0)], G = 0.5 [BCE((3.25, 0.25), 0) + BCE((0, -3.5), 1)].
    ("ragan", 0.0,
     0.5 * (_mean([_softplus(-3.25), _softplus(-0.25)]) + _mean([_softplus(0), _softplus(-3.5)])),
     0.5 * (_mean([_softplus(3.25), _softplus(0.25)]) + _mean([_softplus(-0), _softplus(3.5)]))),
    ("ragan", 0.1,
     0.5 * (_mean([0.9 * _softplus(-3.25) + 0.1 * _softplus(3.25),
                   0.9 * _softplus(-0.25) + 0.1 * _softplus(0.25)])
            + _mean([_softplus(0), _softplus(-3.5)])),
     0.5 * (_mean([_softplus(3.25), _softplus(0.25)]) + _mean([_softplus(-0), _softplus(3.5)]))),
]


@pytest.mark.parametrize("name, smoothing, d_expected, g_expected", HAND_CASES)
def test_objectives_hand_computed(name, smoothing, d_expected, g_expected):
  objective = losses.make_objective(name, label_smoothing=smoothing)
  np.testing.assert_allclose(objective.d_loss(REAL, FAKE), d_expected, rtol=1e-6)
  np.testing.assert_allclose(objective.g_loss(REAL, FAKE), g_expected, rtol=1e-6)


@pytest.mark.parametrize("name, smoothing, d_expected, g_expected", HAND_CASES)
def test_patch_logits_average_over_everything(name, smoothing, d_expected, g_expected):
  # The same four numbers as (N, h, w, 1) PatchGAN maps: two 1x1 "images" of one patch ...
  objective = losses.make_objective(name, label_smoothing=smoothing)
  d_loss, g_loss = jax.jit(objective.d_loss), jax.jit(objective.g_loss)
  np.testing.assert_allclose(d_loss(REAL.reshape(2, 1, 1, 1), FAKE.reshape(2, 1, 1, 1)), d_expected, rtol=1e-6)
  np.testing.assert_allclose(g_loss(REAL.reshape(2, 1, 1, 1), FAKE.reshape(2, 1, 1, 1)), g_expected, rtol=1e-6)
  # ... and a real batch of patch maps, against the formula on the flattened logits.
  rng = np.random.default_rng(0)
  real, fake = rng.normal(0, 2, (2, 3, 3, 4, 1)).astype(np.float32)
  d_flat, g_flat = objective.d_loss(real.ravel(), fake.ravel()), objective.g_loss(real.ravel(), fake.ravel())
  np.testing.assert_allclose(objective.d_loss(real, fake), d_flat, rtol=1e-6)
  np.testing.assert_allclose(objective.g_loss(real, fake), g_flat, rtol=1e-6)


def _torch_bce(logits, target):
  logits = torch.as_tensor(logits)
  return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


# Large logits included: a naive log(sigmoid(x)) would overflow there.
LOGITS_REAL = np.array([[2.0, -1.0, 40.0, -90.0], [0.3, 7.5, -0.2, 1.0]], np.float32).reshape(2, 2, 2, 1)
LOGITS_FAKE = np.array([[0.5, -3.0, 95.0, -60.0], [-1.5, 0.0, 2.5, -7.0]], np.float32).reshape(2, 2, 2, 1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_vanilla_matches_torch_bce_with_logits(smoothing):
  objective = losses.make_objective("vanilla", label_smoothing=smoothing)
  d_expected = _torch_bce(LOGITS_REAL, 1.0 - smoothing) + _torch_bce(LOGITS_FAKE, 0.0)
  g_expected = _torch_bce(LOGITS_FAKE, 1.0)  # non-saturating, never smoothed
  np.testing.assert_allclose(objective.d_loss(LOGITS_REAL, LOGITS_FAKE), d_expected.item(), rtol=1e-5)
  np.testing.assert_allclose(objective.g_loss(LOGITS_REAL, LOGITS_FAKE), g_expected.item(), rtol=1e-5)


def _torch_ragan(real, fake, smoothing):
  """ESRGAN eq. 1-2 with torch's BCE, each loss halved; autograd through both means."""
  real = torch.tensor(real, dtype=torch.float64, requires_grad=True)
  fake = torch.tensor(fake, dtype=torch.float64, requires_grad=True)
  d_loss = 0.5 * (_torch_bce(real - fake.mean(), 1.0 - smoothing) + _torch_bce(fake - real.mean(), 0.0))
  d_grads = torch.autograd.grad(d_loss, (real, fake))
  g_loss = 0.5 * (_torch_bce(real.detach() - fake.mean(), 0.0) + _torch_bce(fake - real.detach().mean(), 1.0))
  (g_grad_fake,) = torch.autograd.grad(g_loss, (fake,))
  return d_loss.item(), [g.numpy() for g in d_grads], g_loss.item(), g_grad_fake.numpy()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_ragan_matches_torch_values_and_gradients(smoothing):
  objective = losses.make_objective("ragan", label_smoothing=smoothing)
  assert objective.uses_real_for_generator
  d_expected, d_grads_expected, g_expected, g_grad_expected = _torch_ragan(
      LOGITS_REAL, LOGITS_FAKE, smoothing)
  np.testing.assert_allclose(objective.d_loss(LOGITS_REAL, LOGITS_FAKE), d_expected, rtol=1e-5)
  np.testing.assert_allclose(objective.g_loss(LOGITS_REAL, LOGITS_FAKE), g_expected, rtol=1e-5)
  d_grads = jax.grad(objective.d_loss, argnums=(0, 1))(LOGITS_REAL, LOGITS_FAKE)
  for ours, expected in zip(d_grads, d_grads_expected):
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-8)
  g_grad_real, g_grad_fake = jax.grad(objective.g_loss, argnums=(0, 1))(LOGITS_REAL, LOGITS_FAKE)
  np.testing.assert_allclose(g_grad_fake, g_grad_expected, rtol=1e-5, atol=1e-8)
  np.testing.assert_array_equal(g_grad_real, 0.0)  # the real logits are constants for G


def test_only_ragan_uses_real_logits_for_the_generator():
  for name in losses.OBJECTIVE_NAMES:
    objective = losses.make_objective(name)
    assert objective.uses_real_for_generator == (name == "ragan")
    if name != "ragan":  # the real logits really are unused
      np.testing.assert_array_equal(
          objective.g_loss(REAL, FAKE), objective.g_loss(np.full_like(REAL, np.nan), FAKE))


def test_label_smoothing_is_one_sided():
  # Only the discriminator's real target moves: its fake target and every generator loss stay.
  for name in ("vanilla", "lsgan", "ragan"):
    plain, smoothed = losses.make_objective(name), losses.make_objective(name, label_smoothing=0.2)
    assert float(smoothed.d_loss(REAL, FAKE)) != float(plain.d_loss(REAL, FAKE))
    np.testing.assert_array_equal(smoothed.g_loss(REAL, FAKE), plain.g_loss(REAL, FAKE))
  # With real logits at +inf-like values, smoothing makes a perfect real score cost something.
  vanilla = losses.make_objective("vanilla", label_smoothing=0.1)
  np.testing.assert_allclose(vanilla.d_loss(np.array([50.0]), np.array([-50.0])), 0.1 * 50.0, rtol=1e-6)


def test_objectives_jit_and_give_float32_scalars():
  for name in losses.OBJECTIVE_NAMES:
    objective = losses.make_objective(name)
    for loss in (objective.d_loss, objective.g_loss):
      value = jax.jit(loss)(LOGITS_REAL, LOGITS_FAKE)
      assert value.shape == () and value.dtype == jnp.float32 and np.isfinite(value)


@pytest.mark.parametrize("name, smoothing, message", [
    ("relativistic", 0.0, r"Unknown loss.adversarial 'relativistic'.*'wgan', 'wgan_gp', 'vanilla', 'lsgan', "
                          r"'hinge', 'ragan'"),
    ("wgan", 0.1, r"means nothing for loss.adversarial='wgan'.*\['vanilla', 'lsgan', 'ragan'\]"),
    ("wgan_gp", 0.1, r"means nothing"),
    ("hinge", 0.05, r"means nothing"),
    ("vanilla", -0.1, r"loss.label_smoothing must be in \[0, 0.5\)"),
    ("lsgan", 0.5, r"loss.label_smoothing must be in"),
])
def test_errors(name, smoothing, message):
  with pytest.raises(ValueError, match=message):
    losses.make_objective(name, label_smoothing=smoothing)
