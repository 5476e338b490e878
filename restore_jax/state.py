"""GANState: everything a GAN run carries from step to step, as one plain pytree.

Two `TrainState`s (generator and discriminator, each with its own optimizer), the generator's EMA parameters, the
step, the rng and the counts of skipped non-finite steps. One pytree means one sharding spec, one donation and one
orbax item.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from flax.training import train_state


class GANState(flax.struct.PyTreeNode):
  step: jax.Array
  generator: train_state.TrainState
  discriminator: train_state.TrainState
  ema_params: Any
  rng: jax.Array
  # Steps whose loss or gradients were NaN/Inf and were therefore not applied: in total, and in a row up to now
  # (train.py stops the run when the second reaches config.max_consecutive_nonfinite). Checkpointed with the rest,
  # so a resumed run keeps counting.
  nonfinite_steps: jax.Array
  consecutive_nonfinite: jax.Array


def learning_rate_fn(base_lr: float, warmup_steps: int) -> optax.Schedule:
  """Constant rate after an optional linear warm-up."""
  if warmup_steps <= 0:
    return optax.constant_schedule(base_lr)
  return optax.linear_schedule(0.0, base_lr, warmup_steps)


def make_optimizer(config: ml_collections.ConfigDict, which: str) -> optax.GradientTransformation:
  """Adam for the generator ("g") or the discriminator ("d"), each with its own learning rate."""
  o = config.optim
  schedule = learning_rate_fn(o[f"{which}_learning_rate"], o.warmup_steps)
  adam = optax.adam(schedule, b1=o.b1, b2=o.b2, eps=o.eps)
  if o.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), adam)
  return adam


def input_shapes(config: ml_collections.ConfigDict) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(degraded, clean) shapes of one image, batch dimension 1, for initialisation."""
  hr = config.data.hr_crop
  lr = hr // config.degradation.get("scale", 1)
  return (1, lr, lr, 3), (1, hr, hr, 3)


def create_gan_state(
    config: ml_collections.ConfigDict, generator: nn.Module, discriminator: nn.Module, rng: jax.Array
) -> GANState:
  """Initialises both networks and optimizers. Pure: jit it with out_shardings to build the state on device."""
  init_rng, rng = jax.random.split(rng)
  # Initialisers draw from an "rbg" key derived from the seed: compiling threefry for every parameter shape takes
  # ~1 s each on a CPU, rbg a fraction of that. The step's own randomness stays on the default, portable threefry.
  init_rng = jax.random.wrap_key_data(jax.random.bits(init_rng, (4,), jnp.uint32), impl="rbg")
  g_rng, d_rng = jax.random.split(init_rng)
  lr_shape, hr_shape = input_shapes(config)
  g_params = generator.init(g_rng, jnp.zeros(lr_shape, jnp.float32))["params"]
  d_params = discriminator.init(d_rng, jnp.zeros(hr_shape, jnp.float32))["params"]
  g_state = train_state.TrainState.create(apply_fn=generator.apply, params=g_params, tx=make_optimizer(config, "g"))
  d_state = train_state.TrainState.create(
      apply_fn=discriminator.apply, params=d_params, tx=make_optimizer(config, "d")
  )
  return GANState(
      step=jnp.zeros((), jnp.int32),
      generator=g_state,
      discriminator=d_state,
      ema_params=jax.tree.map(jnp.copy, g_params),
      rng=rng,
      nonfinite_steps=jnp.zeros((), jnp.int32),
      consecutive_nonfinite=jnp.zeros((), jnp.int32),
  )


def parameter_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
