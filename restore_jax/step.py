"""The GAN training step: n_critic discriminator updates, then one generator update, as one pure function.

`make_train_step` closes over the networks and the loss configuration and returns
`train_step(state, batches, frozen) -> (state, metrics)`; train.py compiles it once with explicit shardings and
donation. `batches` holds `optim.n_critic` batches stacked on a leading axis: discriminator update k trains on
batch k (fresh data for every critic iteration, as in WGAN-GP's Algorithm 1), and the generator update uses the
last one. Nothing here knows the task: shapes and channels come from the batch, the rest from `config.task`.

Every loss term is reported on its own (`g_<term>`, `d_*`). A step whose losses or gradients are not finite is
computed but not applied (see `keep_if`), and counted.

`config.compute_dtype = "bfloat16"` runs both networks' activations, convolutions and matrix products in bfloat16
(mixed precision, Micikevicius et al. 2018): parameters, optimizer state, loss reductions, the gradient penalty's
norm and the metrics stay float32, since the networks cast their outputs back and keep float32 parameters.

`mode="generator"` or `"critic"` builds only that half of the step (restore_jax.bench times them apart).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from restore_jax import losses
from restore_jax import metrics as metrics_lib
from restore_jax import task as task_lib
from restore_jax.state import GANState, ModelState, learning_rate_fn

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Frozen = dict[str, Any]  # Parameters of fixed networks (VGG19), keyed by network name.
COMPUTE_DTYPES = ("float32", "bfloat16")
MODES = ("step", "generator", "critic")


def with_compute_dtype(config: ml_collections.ConfigDict, network: nn.Module) -> nn.Module:
  """`network` computing in `config.compute_dtype` (its parameters stay float32)."""
  name = str(config.get("compute_dtype", "float32"))
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {list(COMPUTE_DTYPES)}, got {name!r}.")
  if name == "float32":
    return network
  if not hasattr(network, "dtype"):
    raise ValueError(f"compute_dtype={name!r} needs networks with a `dtype` attribute; "
                     f"{type(network).__name__} has none: use compute_dtype='float32'.")
  return network.clone(dtype=jnp.dtype(name))


def ema_update(ema, new, decay: float):
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, new)


def all_finite(scalars: list[jax.Array]) -> jax.Array:
  """True when every value is finite.

  Given the losses and the gradients' global norms, this covers every gradient entry: a NaN or Inf anywhere makes
  the norm NaN or Inf (as does an entry too large to square in float32, ~1.8e19, which no sound step has).
  """
  return jnp.all(jnp.isfinite(jnp.stack([jnp.asarray(x, jnp.float32) for x in scalars])))


def keep_if(ok: jax.Array, new, old):
  """`new` if `ok`, else `old` (pytrees of one structure).

  A lax.cond rather than a jnp.where per leaf: both sides are computed either way, and on the tiny recipe
  (XLA:CPU, 8 devices) the cond ran steps as fast, compiled about 8% faster and needed less scratch memory.
  """
  return jax.lax.cond(ok, lambda n, o: n, lambda n, o: o, new, old)


def make_train_step(
    config: ml_collections.ConfigDict,
    generator: nn.Module,
    discriminator: nn.Module,
    mode: str = "step",
) -> Callable[[GANState, Batch, Frozen], tuple[GANState, Metrics]]:
  """Builds `train_step(state, batches, frozen) -> (state, metrics)` for `config`.

  `frozen` holds the parameters of the fixed networks the loss terms need (see `losses.load_frozen`); they are a
  step argument rather than a closure, so 80 MB of VGG19 weights are not baked into the program.
  `mode`: "step" (the training step), "generator" (only the generator's update, against the current
  discriminator) or "critic" (only the n_critic discriminator updates).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}.")
  generator = with_compute_dtype(config, generator)
  discriminator = with_compute_dtype(config, discriminator)
  lc = config.loss
  task = task_lib.from_config(config)
  terms = losses.make_terms(lc)
  objective = losses.make_objective(lc.adversarial, label_smoothing=float(lc.get("label_smoothing", 0.0)))
  gp_weight = float(lc.gp_weight)
  if lc.adversarial == "wgan_gp" and gp_weight <= 0:
    raise ValueError("loss.adversarial='wgan_gp' needs loss.gp_weight > 0 (10 in Gulrajani et al. 2017).")
  conditional = bool(config.get("discriminator_conditional", False))
  mismatch_weight = float(lc.get("mismatch_weight", 0.0))
  if mismatch_weight and not conditional:
    raise ValueError("loss.mismatch_weight needs a conditional discriminator (discriminator_conditional=True): "
                     "mismatched pairs are a condition with another example's image.")
  feature_matching = float(lc.get("feature_matching", 0.0))
  noise_start, noise_steps = float(lc.get("instance_noise", 0.0)), int(lc.get("instance_noise_steps", 0))
  if noise_start < 0 or noise_steps < 0:
    raise ValueError(f"loss.instance_noise and loss.instance_noise_steps must be >= 0, got {noise_start} and "
                     f"{noise_steps}.")
  use_noise = noise_start > 0
  n_critic = int(config.optim.n_critic)
  if n_critic < 1:
    raise ValueError(f"optim.n_critic must be >= 1, got {n_critic}.")
  g_lr = learning_rate_fn(config, "g")
  d_lr = learning_rate_fn(config, "d")

  def g_forward(g_params, g_stats, x, dropout_key):
    """The generator in training mode: (output, updated batch statistics)."""
    out, updates = generator.apply({"params": g_params, "batch_stats": g_stats}, x, train=True,
                                   rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    return out.astype(jnp.float32), updates.get("batch_stats", g_stats)

  def d_forward(d_params, d_stats, condition, images, noise_key, noise_std, *, features=False):
    """Discriminator logits of `images` (beside `condition`), in training mode: (logits, new stats, features)."""
    if conditional:
      images = jnp.concatenate([condition, images], axis=-1)
    if use_noise:
      images = losses.add_instance_noise(images, noise_key, noise_std)
    collections = ["batch_stats", "intermediates"] if features else ["batch_stats"]
    logits, updates = discriminator.apply({"params": d_params, "batch_stats": d_stats}, images, train=True,
                                          mutable=collections)
    sown = jax.tree.leaves(updates.get("intermediates", {}))
    return logits.astype(jnp.float32), updates.get("batch_stats", d_stats), sown

  def condition_of(x: jax.Array, target: jax.Array) -> jax.Array | None:
    """The discriminator's condition: the generator's input brought to the target's size."""
    if not conditional:
      return None
    return task_lib.upsample_to(x, target.shape[1], target.shape[2], task.upsample_method)

  def critic_update(d_state: ModelState, batch: Batch, x, fake, key, noise_std):
    real = batch["target"]
    condition = condition_of(x, real)
    real_key, fake_key, mismatch_key, gp_key = jax.random.split(key, 4)

    def loss_fn(d_params):
      stats = d_state.batch_stats
      real_logits, stats, _ = d_forward(d_params, stats, condition, real, real_key, noise_std)
      fake_logits, stats, _ = d_forward(d_params, stats, condition, fake, fake_key, noise_std)
      adversarial = objective.d_loss(real_logits, fake_logits)
      total = adversarial
      aux = {
          "d_adversarial": adversarial,
          "wasserstein": losses.wasserstein_estimate(real_logits, fake_logits),
          "d_real_score": jnp.mean(real_logits),
          "d_fake_score": jnp.mean(fake_logits),
      }
      if mismatch_weight:
        # Each condition beside another example's clean image: real pictures, wrong pairing, so "fake"
        # (the write-up "Image Restoration Using Generative Adversarial Networks" trains with such mixed pairs).
        mismatched = jnp.roll(real, 1, axis=0)
        mismatch_logits, stats, _ = d_forward(d_params, stats, condition, mismatched, mismatch_key, noise_std)
        mismatch = objective.d_loss(real_logits, mismatch_logits)
        total = total + mismatch_weight * mismatch
        aux["d_mismatch"] = mismatch
      if gp_weight > 0:
        critic = lambda images: d_forward(d_params, stats, condition, images, real_key, noise_std)[0]
        penalty, gp_aux = losses.gradient_penalty(critic, real, fake, gp_key)
        total = total + gp_weight * penalty
        aux.update(gradient_penalty=penalty, **gp_aux)
      aux["d_loss"] = total
      return total, (aux, stats)

    grads, (aux, stats) = jax.grad(loss_fn, has_aux=True)(d_state.params)
    aux["d_grad_norm"] = optax.tree.norm(grads)
    return d_state.apply_gradients(grads=grads).replace(batch_stats=stats), aux

  def train_step(state: GANState, batches: Batch, frozen: Frozen) -> tuple[GANState, Metrics]:
    rng, critic_rng, g_rng, noise_rng = jax.random.split(state.rng, 4)
    noise_std = (losses.instance_noise_sigma(state.step, initial=noise_start, anneal_steps=noise_steps)
                 if use_noise and noise_steps else jnp.float32(noise_start))
    generator_input = lambda b: task_lib.generator_input(b["input"], b.get("mask"), task)
    batch_at = lambda k: jax.tree.map(lambda leaf: leaf[k], batches)
    g_params, g_stats = state.generator.params, state.generator.batch_stats
    dropout_keys = jax.random.split(g_rng, n_critic)

    # The generator's forward pass on the batch its update uses, once: its output is both the last critic
    # update's fake and what the generator's loss is taken of; the pullback gives the generator's gradient later.
    last = batch_at(n_critic - 1)
    x_last = generator_input(last)
    restored, g_pullback, g_stats_new = jax.vjp(
        lambda p: g_forward(p, g_stats, x_last, dropout_keys[-1]), g_params, has_aux=True)

    # Discriminator: n_critic updates against the current generator's (fixed) outputs, each on its own batch.
    d_state = state.discriminator
    checked = []  # Every update's total loss and gradient norm: the step is applied only if all are finite.
    d_metrics = {}
    for k, key in enumerate(jax.random.split(critic_rng, n_critic) if mode != "generator" else []):
      batch = batch_at(k)
      x = generator_input(batch)
      fake = restored if k == n_critic - 1 else g_forward(g_params, g_stats, x, dropout_keys[k])[0]
      d_state, d_metrics = critic_update(d_state, batch, x, jax.lax.stop_gradient(fake), key, noise_std)
      checked += [d_metrics["d_loss"], d_metrics["d_grad_norm"]]  # The last update's metrics are reported.

    # Generator: one update against the updated discriminator, through the pullback of the forward pass above.
    adversarial_on = state.step >= lc.adversarial_start_step
    target = last["target"]
    condition = condition_of(x_last, target)
    real_key, fake_key = jax.random.split(noise_rng)

    def g_loss_fn(output):
      total = 0.0
      aux = {}
      for name, (weight, term) in terms.items():
        value = term.fn(output, target, frozen)
        aux[f"g_{name}"] = value
        total = total + weight * value
      fake_logits, _, fake_features = d_forward(d_state.params, d_state.batch_stats, condition, output, fake_key,
                                                noise_std, features=feature_matching > 0)
      real_logits = real_features = None
      if objective.uses_real_for_generator or feature_matching > 0:
        real_logits, _, real_features = d_forward(d_state.params, d_state.batch_stats, condition, target, real_key,
                                                  noise_std, features=feature_matching > 0)
        real_logits = jax.lax.stop_gradient(real_logits)
      adversarial = objective.g_loss(real_logits, fake_logits)
      adv_weight = jnp.where(adversarial_on, lc.adversarial_weight, 0.0)
      total = total + adv_weight * adversarial
      aux["g_adversarial"] = adversarial
      if feature_matching > 0:
        matching = losses.feature_matching_loss(real_features, fake_features)
        total = total + jnp.where(adversarial_on, feature_matching, 0.0) * matching
        aux["g_feature_matching"] = matching
      aux["g_loss"] = total
      return total, aux

    g_state, g_metrics = state.generator, {}
    if mode != "critic":
      (_, g_metrics), output_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(restored)
      (g_grads,) = g_pullback(output_grad)
      g_metrics["g_grad_norm"] = optax.tree.norm(g_grads)
      g_state = state.generator.apply_gradients(grads=g_grads).replace(batch_stats=g_stats_new)
      checked += [g_metrics["g_loss"], g_metrics["g_grad_norm"]]

    # Non-finite guard: a bad step leaves both networks, their optimizers (and Adam step counts), their statistics
    # and the EMA as they were; the step and the rng still advance, so the next step draws new randomness.
    ok = all_finite(checked)
    ema_params = ema_update(state.ema_params, g_state.params, config.ema_decay)
    ema_stats = ema_update(state.ema_batch_stats, g_state.batch_stats, config.ema_decay)
    g_state, d_state, ema_params, ema_stats = keep_if(
        ok, (g_state, d_state, ema_params, ema_stats),
        (state.generator, state.discriminator, state.ema_params, state.ema_batch_stats))
    bad = jnp.logical_not(ok).astype(jnp.int32)
    new_state = state.replace(
        step=state.step + 1,
        generator=g_state,
        discriminator=d_state,
        ema_params=ema_params,
        ema_batch_stats=ema_stats,
        rng=rng,
        nonfinite_steps=state.nonfinite_steps + bad,
        consecutive_nonfinite=(state.consecutive_nonfinite + 1) * bad,
    )
    baseline = task_lib.baseline_output(last["input"], target.shape, task)
    step_metrics = {
        **d_metrics,
        **g_metrics,
        "psnr": jnp.mean(metrics_lib.psnr(restored, target)),
        "psnr_baseline": jnp.mean(metrics_lib.psnr(baseline, target)),
        "adversarial_on": adversarial_on.astype(jnp.float32),
        "lr_g": g_lr(state.generator.step),
        "lr_d": d_lr(state.generator.step),
        "nonfinite": bad.astype(jnp.float32),
        "nonfinite_steps": new_state.nonfinite_steps,
        "consecutive_nonfinite": new_state.consecutive_nonfinite,
    }
    if use_noise:
      step_metrics["instance_noise"] = noise_std
    return new_state, step_metrics

  return train_step
