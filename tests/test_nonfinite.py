"""The non-finite guard: a step with a NaN/Inf loss or gradient changes no parameter, optimizer state or EMA; it is
counted, and the next good step trains from the state the bad ones left untouched.

One compiled step (8 devices, donation, as train.py runs it) is fed a sequence of batches: NaN in one degraded
pixel, Inf in one clean pixel, a clean pixel so large that only the generator's squared error overflows, then a
clean batch. Each case poisons one sample, on one device.
"""

import functools

import jax
import numpy as np
import pytest

from configs import sr_wgangp
from restore_jax import models, parallel
from restore_jax.state import create_gan_state
from restore_jax.step import make_train_step

N_CRITIC = 2


# float32 overflows past 3.4e38: this target value's square in the generator's MSE is Inf, while the critic, a
# leaky-ReLU network that grows only linearly with its input, and its gradients stay finite (norm around 1e16).
OVERFLOWS_MSE_ONLY = 2e19


def _config():
  c = sr_wgangp.get_config("tiny")
  c.batch_size = 8
  c.optim.n_critic = N_CRITIC
  assert c.loss.terms.mse > 0
  return c


def _clean_batch(config):
  """n_critic batches stacked on a leading axis, as the loop hands them to the step."""
  rng = np.random.default_rng(0)
  size, n = config.data.crop_size, config.optim.n_critic
  target = rng.random((n, config.batch_size, size, size, 3), dtype=np.float32)
  s = config.task.scale
  inputs = target.reshape(n, config.batch_size, size // s, s, size // s, s, 3).mean(axis=(3, 5))
  return {"input": inputs, "target": target}


def _poisoned(batch, key, value):
  """`batch` with one pixel of one sample (sample 3: on device 3 of 8) of the last batch set to `value`."""
  out = {k: v.copy() for k, v in batch.items()}
  out[key][-1, 3, 2, 2, 1] = value
  return out


def _run(config, devices, batches):
  """Runs one compiled, donating step over `batches`; returns host copies of every state (the first is the
  initial one) and every step's metrics."""
  mesh = parallel.make_mesh(devices)
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  repl, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh, leading_axes=1)
  state = jax.jit(functools.partial(create_gan_state, config, generator, discriminator), out_shardings=repl)(
      jax.random.key(config.seed)
  )
  step = jax.jit(
      make_train_step(config, generator, discriminator),
      in_shardings=(repl, shard, repl),
      out_shardings=(repl, repl),
      donate_argnums=(0,),
  )
  states, history = [_host(state)], []
  for batch in batches:
    state, metrics = step(state, parallel.to_global_batch(batch, mesh, leading_axes=1), {})
    _assert_replicas_agree(state)
    states.append(_host(state))
    history.append(jax.device_get(metrics))
  return states, history


def _host(state):
  """A host copy (the device state is donated to the next step), with the typed rng key as raw bits."""
  return jax.device_get(state.replace(rng=jax.random.key_data(state.rng)))


def _assert_replicas_agree(state):
  """Every device holds the same state: the bad sample lived on one device, the decision to skip is global."""
  for leaf in jax.tree.leaves(state.replace(rng=jax.random.key_data(state.rng))):
    shards = [np.asarray(s.data) for s in leaf.addressable_shards]
    for s in shards[1:]:
      np.testing.assert_array_equal(s, shards[0])


def _assert_identical(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_trainable_state_unchanged(before, after):
  """Both networks' parameters, optimizer states and Adam step counts, and the EMA: bit for bit."""
  for name in ("generator", "discriminator"):
    for field in ("params", "opt_state", "step"):
      _assert_identical(getattr(getattr(before, name), field), getattr(getattr(after, name), field))
  _assert_identical(before.ema_params, after.ema_params)


@pytest.fixture(scope="module")
def config():
  return _config()


@pytest.fixture(scope="module")
def run(config):
  assert jax.device_count() == 8, "conftest must give 8 fake CPU devices"
  clean = _clean_batch(config)
  batches = [
      _poisoned(clean, "input", np.nan),
      _poisoned(clean, "target", np.inf),
      _poisoned(clean, "target", OVERFLOWS_MSE_ONLY),
      clean,
  ]
  return _run(config, jax.devices(), batches)


def test_nan_in_degraded_input_skips_the_update(run):
  (s0, s1, *_), (m1, *_) = run
  assert not np.isfinite(m1["d_loss"]) and not np.isfinite(m1["g_loss"])  # The poison did reach the losses.
  _assert_trainable_state_unchanged(s0, s1)
  assert int(s1.step) == 1
  assert not np.array_equal(s0.rng, s1.rng)  # The next step draws fresh randomness.
  assert (int(s1.nonfinite_steps), int(s1.consecutive_nonfinite)) == (1, 1)
  assert (m1["nonfinite"], m1["nonfinite_steps"], m1["consecutive_nonfinite"]) == (1.0, 1, 1)


def test_inf_in_clean_target_skips_the_update(run):
  (_, s1, s2, *_), (_, m2, *_) = run
  assert not np.isfinite(m2["d_loss"])
  _assert_trainable_state_unchanged(s1, s2)
  assert int(s2.step) == 2
  assert not np.array_equal(s1.rng, s2.rng)
  assert (int(s2.nonfinite_steps), int(s2.consecutive_nonfinite)) == (2, 2)
  assert (m2["nonfinite"], m2["nonfinite_steps"], m2["consecutive_nonfinite"]) == (1.0, 2, 2)


def test_bad_generator_loss_also_discards_the_good_critic_updates(run):
  """Only the generator's loss is non-finite: the critic's updates were finite, yet the whole step is dropped."""
  (*_, s2, s3, _), (*_, m3, _) = run
  print({k: float(m3[k]) for k in ("d_loss", "d_grad_norm", "g_loss", "g_grad_norm")})
  # The last critic update was finite, so the first was too (a NaN there would have reached its parameters).
  assert np.isfinite(m3["d_loss"]) and np.isfinite(m3["d_grad_norm"])
  assert not np.isfinite(m3["g_loss"])
  _assert_trainable_state_unchanged(s2, s3)
  assert (int(s3.nonfinite_steps), int(s3.consecutive_nonfinite), m3["nonfinite"]) == (3, 3, 1.0)


def test_good_step_after_bad_ones_trains_and_resets_the_run_of_bad_steps(config, run):
  (s0, *_, s3, s4), (*_, m4) = run
  for k in ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm"):
    assert np.isfinite(m4[k]), k
  assert m4["nonfinite"] == 0.0
  assert (int(s4.nonfinite_steps), int(s4.consecutive_nonfinite)) == (3, 0)
  assert int(s4.step) == 4
  # Adam counted only the good step: one generator update and N_CRITIC critic updates.
  assert int(s4.generator.step) == 1 and int(s4.discriminator.step) == N_CRITIC
  for name in ("generator", "discriminator"):
    new, old = (jax.tree.leaves(getattr(s, name).params) for s in (s4, s3))
    assert all(np.all(np.isfinite(p)) for p in new)
    assert any(not np.array_equal(p, q) for p, q in zip(new, old))
  # The EMA saw exactly one update, from the initial parameters: the bad steps left no trace in it.
  d = config.ema_decay
  for e4, p0, p4 in zip(*(jax.tree.leaves(t) for t in (s4.ema_params, s0.generator.params, s4.generator.params))):
    np.testing.assert_allclose(e4, d * p0 + (1 - d) * p4, rtol=1e-6, atol=1e-7)
