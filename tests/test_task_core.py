"""The task-neutral core: geometry from config, conditional and mismatched discriminator inputs, a fresh batch for
every critic update, learning-rate schedules, and starting a generator from another run.

The step is checked against computations written here in numpy with toy networks small enough to differentiate by
hand: a generator that multiplies its input by one learned number, and a critic that is a weighted sum of channel
totals.
"""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common, sr_wgangp
from restore_jax import checkpoint, data, parallel, task as task_lib, train
from restore_jax.state import GANState, create_gan_state, learning_rate_fn
from restore_jax.step import make_train_step

CROP, BATCH = 8, 4


class Gain(nn.Module):
  """Generator: input times one learned number (starts at 1); a stand-in whose output is known exactly."""

  @nn.compact
  def __call__(self, x, *, train=False):
    del train
    out = x[..., :3] * self.param("gain", nn.initializers.ones, ())
    return jnp.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


class ChannelCritic(nn.Module):
  """Critic: sum over pixels of sum_c w_c x_c (one logit per image), w initialised to 0.1 * (1..C)."""

  @nn.compact
  def __call__(self, x, *, train=False):
    del train
    w = self.param("w", lambda key, shape: 0.1 * jnp.arange(1, shape[0] + 1, dtype=jnp.float32), (x.shape[-1],))
    return jnp.einsum("nhwc,c->n", x, w)


def _config(**overrides) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task.update(scale=1, baseline="identity")
  c.data.crop_size = CROP
  c.batch_size = BATCH
  c.loss.terms = ml_collections.ConfigDict({"l1": 1.0})
  c.loss.gp_weight = 0.0
  c.loss.adversarial = "wgan"
  c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8
  for key, value in overrides.items():
    parent, _, leaf = key.rpartition(".")
    (functools.reduce(getattr, parent.split("."), c) if parent else c)[leaf] = value
  return c


def _batches(n_critic: int, seed: int = 0, channels: int = 3) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  target = rng.random((n_critic, BATCH, CROP, CROP, 3), dtype=np.float32)
  inputs = rng.random((n_critic, BATCH, CROP, CROP, channels), dtype=np.float32)
  return {"input": inputs, "target": target}


def _step_once(config, batches):
  mesh = parallel.make_mesh(jax.devices()[:1])
  generator, critic = Gain(), ChannelCritic()
  state = create_gan_state(config, generator, critic, jax.random.key(0))
  step = jax.jit(make_train_step(config, generator, critic))
  return state, *step(state, parallel.to_global_batch(batches, mesh, leading_axes=1), {})


def _adam_first_update(grad: np.ndarray, lr: float, eps: float = 1e-8) -> np.ndarray:
  """Adam's first step (bias-corrected moments equal g and g^2): -lr g / (|g| + eps)."""
  return -lr * grad / (np.abs(grad) + eps)


def _adam_two_updates(g1: np.ndarray, g2: np.ndarray, lr: float, b1=0.9, b2=0.999, eps=1e-8) -> np.ndarray:
  m1, v1 = (1 - b1) * g1, (1 - b2) * g1**2
  first = -lr * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
  m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2**2
  second = -lr * (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps)
  return first + second


# ------------------------------------------------------------------------------------------------ Geometry


def test_task_from_config_defaults_and_sr():
  sr = task_lib.from_config(sr_wgangp.get_config())
  assert (sr.scale, sr.in_channels, sr.out_channels, sr.use_mask, sr.crop_border, sr.baseline) == (
      4, 3, 3, False, 4, "bicubic")
  same = task_lib.from_config(_config())
  assert (same.scale, same.crop_border, same.baseline, same.generator_channels) == (1, 0, "identity", 3)
  masked = task_lib.from_config(_config(**{"task.use_mask": True}))
  assert masked.generator_channels == 4


@pytest.mark.parametrize("key, value, message", [
    ("task.scale", 0, "task.scale"),
    ("task.in_channels", 2, "task.in_channels"),
    ("task.baseline", "lanczos", "task.baseline"),
])
def test_task_errors_name_the_key(key, value, message):
  with pytest.raises(ValueError, match=message):
    task_lib.from_config(_config(**{key: value}))


def test_baseline_output_brings_the_input_to_the_target():
  gray = np.arange(2 * 2 * 1, dtype=np.float32).reshape(1, 2, 2, 1) / 4
  out = np.asarray(task_lib.baseline_output(jnp.asarray(gray), (1, 4, 4, 3), task_lib.Task(scale=2)))
  expected = np.repeat(np.repeat(np.repeat(gray, 2, axis=1), 2, axis=2), 3, axis=3)  # Nearest, gray -> RGB.
  np.testing.assert_array_equal(out, expected)
  rgb = np.random.default_rng(0).random((1, 4, 4, 3), dtype=np.float32)
  bicubic = task_lib.baseline_output(jnp.asarray(rgb), (1, 16, 16, 3), task_lib.Task(scale=4, baseline="bicubic"))
  np.testing.assert_allclose(bicubic, jax.image.resize(rgb, (1, 16, 16, 3), "bicubic"), atol=1e-6)


# ------------------------------------------------------------------------------------------------ The step


def test_conditional_critic_sees_condition_beside_image_and_mismatched_pairs():
  config = _config(discriminator_conditional=True, **{"loss.adversarial": "vanilla", "loss.mismatch_weight": 0.5})
  batches = _batches(1)
  state, new_state, metrics = _step_once(config, batches)
  x, target = batches["input"][0], batches["target"][0]
  w = 0.1 * np.arange(1, 7, dtype=np.float64)  # 3 condition channels + 3 image channels.
  logit = lambda cond, img: np.einsum("nhwc,c->n", np.concatenate([cond, img], -1).astype(np.float64), w)
  real, fake = logit(x, target), logit(x, x)  # The gain generator starts as the identity.
  mismatched = logit(x, np.roll(target, 1, axis=0))
  softplus = lambda z: np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0)
  adversarial = np.mean(softplus(-real)) + np.mean(softplus(fake))
  mismatch = np.mean(softplus(-real)) + np.mean(softplus(mismatched))
  np.testing.assert_allclose(metrics["d_adversarial"], adversarial, rtol=1e-5)
  np.testing.assert_allclose(metrics["d_mismatch"], mismatch, rtol=1e-5)
  np.testing.assert_allclose(metrics["d_loss"], adversarial + 0.5 * mismatch, rtol=1e-5)
  assert new_state.discriminator.params["w"].shape == (6,)


def test_each_critic_update_trains_on_its_own_batch():
  """Two critic updates on batches 0 and 1, checked against WGAN critic gradients and Adam written out here."""
  config = _config(**{"optim.n_critic": 2, "optim.d_learning_rate": 0.01})
  batches = _batches(2)
  _, new_state, _ = _step_once(config, batches)
  totals = lambda images: images.astype(np.float64).sum(axis=(1, 2))  # (N, C) channel totals.
  # WGAN critic loss mean D(fake) - mean D(real); D linear in w, so the gradient is the difference of mean totals.
  grads = [np.mean(totals(batches["input"][k]), 0) - np.mean(totals(batches["target"][k]), 0) for k in range(2)]
  w0 = 0.1 * np.arange(1, 4)
  expected = w0 + _adam_two_updates(grads[0], grads[1], 0.01)
  np.testing.assert_allclose(new_state.discriminator.params["w"], expected, rtol=1e-5)
  same_batch_twice = w0 + _adam_two_updates(grads[0], grads[0], 0.01)
  assert not np.allclose(expected, same_batch_twice, rtol=1e-4)  # The test can tell the batches apart.


def test_generator_update_uses_the_last_batch_and_the_updated_critic():
  """L1 + WGAN generator loss on the last batch: d/dgain by hand, then Adam's first step."""
  config = _config(**{"optim.n_critic": 2, "optim.d_learning_rate": 0.01, "optim.g_learning_rate": 0.05,
                      "loss.adversarial_weight": 0.1})
  batches = _batches(2, seed=3)
  _, new_state, metrics = _step_once(config, batches)
  x, target = batches["input"][1].astype(np.float64), batches["target"][1].astype(np.float64)
  w = np.asarray(new_state.discriminator.params["w"], np.float64)  # The critic after its two updates.
  # loss(g) = mean|g x - t| - 0.1 * mean_n sum_hwc (g x) w_c  at g = 1.
  dl1 = np.mean(np.sign(x - target) * x)
  dadv = -np.mean(np.einsum("nhwc,c->n", x, w))
  np.testing.assert_allclose(metrics["g_l1"], np.mean(np.abs(x - target)), rtol=1e-5)
  expected = 1.0 + _adam_first_update(np.array(dl1 + 0.1 * dadv), 0.05)
  np.testing.assert_allclose(new_state.generator.params["gain"], expected, rtol=1e-5)


def test_gray_input_step_reports_the_gray_baseline():
  config = _config(**{"task.in_channels": 1})
  batches = _batches(1, channels=1)
  _, _, metrics = _step_once(config, batches)
  gray, target = batches["input"][0], batches["target"][0]
  baseline = np.round(np.repeat(gray, 3, axis=-1) * 255)
  mse = np.mean((baseline - np.round(target * 255)) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(metrics["psnr_baseline"], np.mean(10 * np.log10(255**2 / mse)), rtol=1e-5)


# ------------------------------------------------------------------------------------------------ Schedules


def test_learning_rate_schedules_match_their_formulas():
  c = _config(total_steps=100)
  c.optim.update(g_learning_rate=2e-4, g_schedule="step", milestones=(10, 30), gamma=0.5, warmup_steps=0)
  lr = learning_rate_fn(c, "g")
  assert [float(lr(s)) for s in (0, 9, 10, 29, 30, 99)] == pytest.approx([2e-4, 2e-4, 1e-4, 1e-4, 5e-5, 5e-5])
  c.optim.update(g_schedule="cosine", warmup_steps=20)
  lr = learning_rate_fn(c, "g")
  assert float(lr(10)) == pytest.approx(1e-4)  # Half-way up the linear warm-up.
  assert float(lr(20)) == pytest.approx(2e-4)
  assert float(lr(60)) == pytest.approx(2e-4 * 0.5 * (1 + np.cos(np.pi * 40 / 80)))
  c.optim.d_schedule = "linear"
  with pytest.raises(ValueError, match="optim.d_schedule"):
    learning_rate_fn(c, "d")
  c.optim.update(d_schedule="step", milestones=(30, 10))
  with pytest.raises(ValueError, match="optim.milestones"):
    learning_rate_fn(c, "d")


def test_discriminator_schedule_counts_generator_steps():
  c = _config(**{"optim.n_critic": 5})
  c.optim.update(d_learning_rate=1.0, d_schedule="step", milestones=(2,), gamma=0.1)
  lr = learning_rate_fn(c, "d", updates_per_step=5)
  assert float(lr(9)) == pytest.approx(1.0) and float(lr(10)) == pytest.approx(0.1)  # Update 10 = step 2.


# ------------------------------------------------------------------------------------------------ Runs


def test_a_workdir_of_restore_jax_0_1_is_refused_with_the_reason(tmp_path):
  old = sr_wgangp.get_config("tiny").to_dict()
  del old["task"]
  (tmp_path / "config.json").write_text(json.dumps(old, default=str))
  with pytest.raises(checkpoint.IncompatibleConfig, match="restore_jax 0.1"):
    checkpoint.check_config_compatible(tmp_path, sr_wgangp.get_config("tiny"))


def test_init_from_starts_the_generator_from_another_runs_ema(tmp_path):
  config = sr_wgangp.get_config("tiny")
  from restore_jax import models  # pylint: disable=g-import-not-at-top

  generator, critic = models.make_generator(config.generator), models.make_discriminator(config.discriminator)
  init = jax.jit(functools.partial(create_gan_state, config, generator, critic))
  other = init(jax.random.key(1))
  other = other.replace(ema_params=jax.tree.map(lambda p: p + 0.25, other.ema_params))
  (tmp_path / "config.json").write_text(json.dumps(config.to_dict(), default=str))
  manager = checkpoint.make_manager(tmp_path / "checkpoints", keep=1)
  checkpoint.save(manager, 7, other, data.make_train_iterator(config))
  manager.wait_until_finished()
  manager.close()

  fresh = init(jax.random.key(2))
  config.generator.init_from = f"{tmp_path}:7"
  started: GANState = train.initialise_generator_from(config, fresh)
  for ours, theirs in zip(jax.tree.leaves(started.generator.params), jax.tree.leaves(other.ema_params)):
    np.testing.assert_array_equal(ours, theirs)
  for ours, theirs in zip(jax.tree.leaves(started.ema_params), jax.tree.leaves(other.ema_params)):
    np.testing.assert_array_equal(ours, theirs)
  for ours, theirs in zip(jax.tree.leaves(started.discriminator.params), jax.tree.leaves(fresh.discriminator.params)):
    np.testing.assert_array_equal(ours, theirs)  # Only the generator comes from the other run.
  config.generator.init_from_ema = False
  raw = train.initialise_generator_from(config, fresh)
  for ours, theirs in zip(jax.tree.leaves(raw.generator.params), jax.tree.leaves(other.generator.params)):
    np.testing.assert_array_equal(ours, theirs)
  config.generator.num_feat = 4
  with pytest.raises(ValueError, match="generator.init_from"):
    smaller = models.make_generator(config.generator)
    train.initialise_generator_from(config, create_gan_state(config, smaller, critic, jax.random.key(2)))
