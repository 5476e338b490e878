"""Mixed precision: config.compute_dtype = "bfloat16" keeps float32 state and stays close to the float32 step.

Both steps start from the same state and see the same batches for three steps (pixel and GAN phases, gradient
penalty on). bfloat16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2%), and every convolution accumulates
in float32, so per-step losses are expected within ~1% of float32 and the parameter updates to point the same way.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sr_wgangp
from restore_jax import models
from restore_jax.state import create_gan_state
from restore_jax.step import make_train_step

STEPS = 3


def _config(dtype: str):
  c = sr_wgangp.get_config("tiny")
  c.compute_dtype = dtype
  c.loss.adversarial_start_step = 1  # Step 1 pixel-only, then GAN steps.
  c.optim.eps = 1e-3  # Adam's update of a ~0 gradient is its sign at eps 1e-8: rounding would flip whole steps.
  return c


def _batches():
  rng = np.random.default_rng(0)
  out = []
  for _ in range(STEPS):
    target = rng.random((1, 8, 32, 32, 3), dtype=np.float32)
    out.append({"target": target, "input": target.reshape(1, 8, 8, 4, 8, 4, 3).mean(axis=(3, 5))})
  return out


def _run(dtype: str):
  config = _config(dtype)
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  state = jax.jit(functools.partial(create_gan_state, config, generator, discriminator))(jax.random.key(0))
  step = jax.jit(make_train_step(config, generator, discriminator))
  history = []
  for batch in _batches():
    state, metrics = step(state, batch, {})
    history.append(jax.device_get(metrics))
  return state, history, step, batch


@pytest.fixture(scope="module")
def runs():
  config = _config("float32")
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  initial = jax.jit(functools.partial(create_gan_state, config, generator, discriminator))(jax.random.key(0))
  return initial, _run("float32"), _run("bfloat16")


def test_state_stays_float32(runs):
  _, _, (state, _, _, _) = runs
  floats = {str(x.dtype) for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)}
  assert floats == {"float32"}


def test_networks_compute_in_bfloat16(runs):
  """The bfloat16 step's convolutions and matrix products take bfloat16 operands; the float32 one's do not."""
  initial, (_, _, step32, batch), (_, _, step16, _) = runs

  def dot_operand_dtypes(step):
    text = step.lower(initial, batch, {}).as_text()
    lines = [line for line in text.splitlines() if "stablehlo.convolution" in line or "stablehlo.dot_general" in line]
    return {dtype for line in lines for dtype in ("bf16", "f32") if f"x{dtype}>" in line.split("->")[0]}

  assert dot_operand_dtypes(step32) == {"f32"}
  assert "bf16" in dot_operand_dtypes(step16)


def test_losses_within_one_percent_of_float32(runs):
  _, (_, hist32, _, _), (_, hist16, _, _) = runs
  for step, (m32, m16) in enumerate(zip(hist32, hist16), start=1):
    for key in ("g_loss", "g_mse", "d_loss", "gradient_penalty", "psnr"):
      np.testing.assert_allclose(m16[key], m32[key], rtol=1e-2, err_msg=f"{key} at step {step}")
    # Differences of nearly equal scores: compared against their own scale, not relatively.
    np.testing.assert_allclose(m16["wasserstein"], m32["wasserstein"], atol=2e-2 * abs(m32["d_real_score"]) + 1e-4)


def test_updates_point_the_same_way(runs):
  """Three steps of updates of each network: within 20% of the float32 updates (relative L2), cosine > 0.98.

  The critic's Adam (beta1 = 0, as in WGAN-GP) divides each gradient entry by its own running scale, so its many
  small entries move by about the learning rate whatever their size, and bfloat16 rounding in them shows fully.
  """
  initial, (state32, _, _, _), (state16, _, _, _) = runs
  flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
  for name in ("generator", "discriminator"):
    start = flat(getattr(initial, name).params)
    d32 = flat(getattr(state32, name).params) - start
    d16 = flat(getattr(state16, name).params) - start
    print(name, np.linalg.norm(d16 - d32) / np.linalg.norm(d32), d16 @ d32 / (np.linalg.norm(d16) * np.linalg.norm(d32)))
    assert np.linalg.norm(d16 - d32) / np.linalg.norm(d32) < 0.2, name
    assert d16 @ d32 / (np.linalg.norm(d16) * np.linalg.norm(d32)) > 0.98, name
