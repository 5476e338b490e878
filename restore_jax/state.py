"""GANState: everything a GAN run carries from step to step, as one plain pytree.

Two `ModelState`s (generator and discriminator, each with its own optimizer and its normalisation statistics),
the generator's EMA, the step, the rng and the counts of skipped non-finite steps. One pytree means one sharding
spec, one donation and one orbax item.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn
from flax.training import train_state

from restore_jax import task as task_lib

SCHEDULES = ("constant", "step", "cosine")


class ModelState(train_state.TrainState):
  """A network's parameters and optimizer, plus its other Flax variables.

  `batch_stats` holds batch-norm running statistics and spectral-norm power-iteration vectors ({} for networks
  without them): state that is not trained by gradients but must be checkpointed and restored exactly.
  """

  batch_stats: Any = flax.struct.field(default_factory=dict)

  @property
  def variables(self) -> dict[str, Any]:
    return {"params": self.params, "batch_stats": self.batch_stats}


class GANState(flax.struct.PyTreeNode):
  step: jax.Array
  generator: ModelState
  discriminator: ModelState
  ema_params: Any  # Exponential moving average of the generator's parameters: what evaluation and restore use.
  ema_batch_stats: Any  # ... and of its batch-norm statistics ({} when it has none).
  rng: jax.Array
  # Steps whose loss or gradients were NaN/Inf and were therefore not applied: in total, and in a row up to now
  # (train.py stops the run when the second reaches config.max_consecutive_nonfinite). Checkpointed with the rest,
  # so a resumed run keeps counting.
  nonfinite_steps: jax.Array
  consecutive_nonfinite: jax.Array

  @property
  def ema_variables(self) -> dict[str, Any]:
    return {"params": self.ema_params, "batch_stats": self.ema_batch_stats}


def learning_rate_fn(config: ml_collections.ConfigDict, which: str, updates_per_step: int = 1) -> optax.Schedule:
  """The learning rate of the generator ("g") or discriminator ("d") as a function of its optimizer's count.

  Schedules are written in generator steps (ESRGAN's milestones are iterations); a discriminator updated
  n_critic times per step counts n_critic updates per step, so its count is divided back into steps.
  """
  o = config.optim
  base = float(o[f"{which}_learning_rate"])
  name = o.get(f"{which}_schedule", "constant")
  warmup = int(o.get("warmup_steps", 0))
  if name == "constant":
    decay = optax.constant_schedule(base)
  elif name == "step":
    milestones = [int(m) for m in o.get("milestones", ())]
    if any(m <= 0 for m in milestones) or milestones != sorted(milestones):
      raise ValueError(f"optim.milestones must be increasing positive steps, got {tuple(milestones)}.")
    decay = optax.piecewise_constant_schedule(base, {m: float(o.gamma) for m in milestones})
  elif name == "cosine":
    decay = optax.cosine_decay_schedule(base, max(1, int(config.total_steps) - warmup))
  else:
    raise ValueError(f"optim.{which}_schedule must be one of {SCHEDULES}, got {name!r}.")
  schedule = decay
  if warmup > 0:
    # Step decay keeps its milestones in absolute steps; cosine decays over what is left after the warm-up.
    after = decay if name == "step" else (lambda count: decay(count - warmup))
    schedule = lambda count: jnp.where(count < warmup, base * count / warmup, after(count))
  if updates_per_step == 1:
    return schedule
  return lambda count: schedule(count // updates_per_step)


def make_optimizer(config: ml_collections.ConfigDict, which: str) -> optax.GradientTransformation:
  """Adam for the generator ("g") or the discriminator ("d"), each with its own learning rate and schedule."""
  o = config.optim
  updates = int(o.n_critic) if which == "d" else 1
  adam = optax.adam(learning_rate_fn(config, which, updates), b1=o.b1, b2=o.b2, eps=o.eps)
  if o.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), adam)
  return adam


def input_shapes(config: ml_collections.ConfigDict) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(generator input, target) shapes of one example, batch dimension 1, for initialisation."""
  task = task_lib.from_config(config)
  size = int(config.data.crop_size)
  if size % task.scale:
    raise ValueError(f"data.crop_size={size} must be a multiple of task.scale={task.scale}.")
  small = task.input_size(size)
  return (1, small, small, task.generator_channels), (1, size, size, task.out_channels)


def discriminator_input_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """What the discriminator sees: the image, plus the condition's channels when it is conditional."""
  task = task_lib.from_config(config)
  _, target = input_shapes(config)
  channels = target[-1] + (task.generator_channels if config.get("discriminator_conditional", False) else 0)
  return target[:-1] + (channels,)


def create_gan_state(
    config: ml_collections.ConfigDict, generator: nn.Module, discriminator: nn.Module, rng: jax.Array
) -> GANState:
  """Initialises both networks and optimizers. Pure: jit it with out_shardings to build the state on device."""
  init_rng, rng = jax.random.split(rng)
  # Initialisers draw from an "rbg" key derived from the seed: compiling threefry for every parameter shape takes
  # ~1 s each on a CPU, rbg a fraction of that. The step's own randomness stays on the default, portable threefry.
  init_rng = jax.random.wrap_key_data(jax.random.bits(init_rng, (4,), jnp.uint32), impl="rbg")
  g_rng, d_rng = jax.random.split(init_rng)
  g_input, _ = input_shapes(config)
  g_vars = generator.init(g_rng, jnp.zeros(g_input, jnp.float32))
  d_vars = discriminator.init(d_rng, jnp.zeros(discriminator_input_shape(config), jnp.float32))
  g_state = ModelState.create(apply_fn=generator.apply, params=g_vars["params"], tx=make_optimizer(config, "g"),
                              batch_stats=dict(g_vars.get("batch_stats", {})))
  d_state = ModelState.create(apply_fn=discriminator.apply, params=d_vars["params"], tx=make_optimizer(config, "d"),
                              batch_stats=dict(d_vars.get("batch_stats", {})))
  return GANState(
      step=jnp.zeros((), jnp.int32),
      generator=g_state,
      discriminator=d_state,
      ema_params=jax.tree.map(jnp.copy, g_state.params),
      ema_batch_stats=jax.tree.map(jnp.copy, g_state.batch_stats),
      rng=rng,
      nonfinite_steps=jnp.zeros((), jnp.int32),
      consecutive_nonfinite=jnp.zeros((), jnp.int32),
  )


def parameter_count(params: Any) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
