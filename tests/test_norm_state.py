"""Normalisation state in the GAN state: batch norm over the global batch (the same on 1 and 8 devices), spectral
norm's power-iteration vectors checkpointed and restored exactly, dropout drawn from the state's rng, and running
statistics used at inference.
"""

import functools

import jax
import ml_collections
import numpy as np
import pytest

from configs import common
from restore_jax import checkpoint, data, inference, models, parallel
from restore_jax.state import create_gan_state
from restore_jax.step import make_train_step

CROP, BATCH = 16, 8


def _config(discriminator: dict) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.task.update(scale=1, baseline="identity")
  c.data.crop_size, c.batch_size = CROP, BATCH
  c.generator = ml_collections.ConfigDict(dict(name="unet", num_downs=2, num_feat=4, max_feat=8))
  c.discriminator = ml_collections.ConfigDict(discriminator)
  c.discriminator_conditional = True
  c.loss.terms = ml_collections.ConfigDict({"l1": 1.0})
  c.loss.adversarial, c.loss.gp_weight = "vanilla", 0.0
  c.optim.eps = 1e-3  # Keeps float rounding in ~0 gradient entries from being scaled up to whole Adam steps.
  return c


def _batches(steps: int) -> list[dict[str, np.ndarray]]:
  rng = np.random.default_rng(0)
  out = []
  for _ in range(steps):
    target = rng.random((1, BATCH, CROP, CROP, 3), dtype=np.float32)
    out.append({"input": np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1).astype(np.float32),
                "target": target})
  return out


def _setup(config, devices):
  mesh = parallel.make_mesh(devices)
  generator, discriminator = models.make_generator(config.generator), models.make_discriminator(config.discriminator)
  repl = parallel.replicated(mesh)
  init = jax.jit(functools.partial(create_gan_state, config, generator, discriminator), out_shardings=repl)
  step = jax.jit(make_train_step(config, generator, discriminator),
                 in_shardings=(repl, parallel.batch_sharded(mesh, leading_axes=1), repl), out_shardings=(repl, repl))
  put = lambda batch: parallel.to_global_batch(batch, mesh, leading_axes=1)
  return init, step, put


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


@pytest.fixture(scope="module")
def batch_norm_runs():
  """U-Net (batch norm) + conditional PatchGAN (batch norm), 2 steps on 1 device and on 8."""
  config = _config(dict(name="patchgan", num_feat=4, num_layers=2, norm="batch"))
  batches = _batches(2)
  runs = []  # Per topology: the states after 0, 1 and 2 steps.
  for devices in (jax.devices()[:1], jax.devices()):
    init, step, put = _setup(config, devices)
    states = [init(jax.random.key(0))]
    for batch in batches:
      states.append(step(states[-1], put(batch), {})[0])
    runs.append(jax.device_get(states))
  return config, runs


def test_batch_norm_statistics_are_global_one_device_equals_eight(batch_norm_runs):
  _, ((*_, one), (*_, eight)) = batch_norm_runs
  assert jax.tree.leaves(one.generator.batch_stats) and jax.tree.leaves(one.discriminator.batch_stats)
  for name in ("generator", "discriminator"):
    for part in ("params", "batch_stats"):
      a, b = _leaves(getattr(getattr(one, name), part)), _leaves(getattr(getattr(eight, name), part))
      for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5, err_msg=f"{name}.{part}")


def test_batch_norm_running_statistics_moved_and_the_ema_follows_them(batch_norm_runs):
  config, ((s0, s1, s2), _) = batch_norm_runs
  means = [x for path, x in jax.tree_util.tree_flatten_with_path(s2.generator.batch_stats)[0]
           if "mean" in jax.tree_util.keystr(path)]
  assert means and all(np.any(np.asarray(m) != 0) for m in means)  # Initialised at 0, updated by two steps.
  d = config.ema_decay  # The EMA recursion, by hand, from the initial statistics.
  for e2, a, b, c in zip(*(_leaves(t) for t in (s2.ema_batch_stats, s0.generator.batch_stats,
                                                  s1.generator.batch_stats, s2.generator.batch_stats)), strict=True):
    np.testing.assert_allclose(e2, d * (d * a + (1 - d) * b) + (1 - d) * c, rtol=1e-5, atol=1e-7)


def test_inference_uses_running_statistics_not_the_batch(batch_norm_runs):
  config, ((*_, one), _) = batch_norm_runs
  generator = models.make_generator(config.generator)
  apply = inference.make_apply(generator)
  x = np.random.default_rng(5).random((2, CROP, CROP, 3), dtype=np.float32)
  together = np.asarray(apply(one.generator.variables, x))
  alone = np.asarray(apply(one.generator.variables, x[:1]))
  np.testing.assert_allclose(together[:1], alone, atol=1e-6)  # No batch statistics: one image is independent.
  expected = generator.apply(one.generator.variables, x, train=False)
  np.testing.assert_allclose(together, np.clip(expected, 0, 1), atol=1e-6)


def test_any_image_size_is_padded_to_what_the_unet_needs(batch_norm_runs):
  config, ((*_, one), _) = batch_norm_runs
  apply = inference.make_apply(models.make_generator(config.generator))
  odd = np.random.default_rng(6).random((1, 13, 10, 3), dtype=np.float32)
  assert np.asarray(apply(one.generator.variables, odd)).shape == (1, 13, 10, 3)


def test_dropout_draws_from_the_state_rng():
  config = _config(dict(name="patchgan", num_feat=4, num_layers=2, norm="batch"))
  config.generator.update(num_downs=4, max_feat=8)  # Dropout sits in the 3 decoder levels nearest the bottleneck.
  init, step, put = _setup(config, jax.devices()[:1])
  batch = put(_batches(1)[0])
  state = init(jax.random.key(0))
  a, _ = step(state, batch, {})
  b, _ = step(state, batch, {})
  c, _ = step(state.replace(rng=jax.random.key(99)), batch, {})
  for x, y in zip(_leaves(a.generator.params), _leaves(b.generator.params)):
    np.testing.assert_array_equal(x, y)  # Same rng: the same dropout masks.
  assert any(not np.array_equal(x, z) for x, z in zip(_leaves(a.generator.params), _leaves(c.generator.params)))


def test_spectral_norm_vectors_are_checkpointed_and_resume_exactly(tmp_path):
  """U-Net discriminator with spectral norm: 4 steps straight = 2 steps, save, restore into a fresh state, 2 more."""
  config = _config(dict(name="unet_sn", num_feat=4))
  batches = _batches(4)
  init, step, put = _setup(config, jax.devices())
  straight = init(jax.random.key(0))
  for batch in batches:
    straight, _ = step(straight, put(batch), {})

  state = init(jax.random.key(0))
  for batch in batches[:2]:
    state, _ = step(state, put(batch), {})
  assert any("/u" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
      state.discriminator.batch_stats)[0])
  iterator = data.make_train_iterator(_samples_config(config))
  manager = checkpoint.make_manager(tmp_path / "checkpoints", keep=1)
  checkpoint.save(manager, 2, state, iterator)
  manager.wait_until_finished()
  resumed, saved_step = checkpoint.restore_latest(manager, init(jax.random.key(1)), iterator)
  manager.close()
  assert saved_step == 2
  for batch in batches[2:]:
    resumed, _ = step(resumed, put(batch), {})
  as_bits = lambda s: s.replace(rng=jax.random.key_data(s.rng))
  for x, y in zip(_leaves(as_bits(straight)), _leaves(as_bits(resumed)), strict=True):
    np.testing.assert_array_equal(x, y)


def _samples_config(config):
  """The run's config with the sample photographs as data: only the iterator it saves matters here."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.degradation = ml_collections.ConfigDict(dict(name="bicubic", scale=1))
  return c
