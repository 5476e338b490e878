"""Adversarial objectives: WGAN-GP and the usual alternatives, chosen by name.

Every loss takes raw critic outputs (no sigmoid) of any shape, e.g. (N,) from
a global critic or (N, H, W, 1) from a PatchGAN, and averages over all of them.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

CriticLossFn = Callable[[jax.Array, jax.Array], jax.Array]
GeneratorLossFn = Callable[[jax.Array], jax.Array]


# WGAN (Arjovsky et al. 2017) with gradient penalty (Gulrajani et al. 2017).


def wgan_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """E[D(fake)] - E[D(real)]: the critic pushes the two apart."""
  return jnp.mean(fake_scores) - jnp.mean(real_scores)


def wgan_generator_loss(fake_scores: jax.Array) -> jax.Array:
  """-E[D(fake)]: the generator raises the critic's score of its outputs."""
  return -jnp.mean(fake_scores)


def wasserstein_estimate(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """E[D(real)] - E[D(fake)]: the critic's estimate of the W1 distance, worth logging."""
  return jnp.mean(real_scores) - jnp.mean(fake_scores)


def _safe_norm(squared_norm: jax.Array) -> jax.Array:
  """sqrt whose gradient stays finite (zero) where the norm is exactly 0."""
  positive = squared_norm > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared_norm, 1.0)), 0.0)


def gradient_penalty(
    critic_fn: Callable[[jax.Array], jax.Array],
    real: jax.Array,
    fake: jax.Array,
    key: jax.Array,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """mean_i (||grad_x D(x_i)||_2 - 1)^2 at random points between real and fake.

  This is the soft 1-Lipschitz constraint of WGAN-GP, applied on the lines
  joining real and fake samples, where the optimal critic has unit gradient.
  The per-sample gradient comes from one grad of sum(D(x)), which is exact
  only because the critic treats samples independently (no batch norm).
  The result stays differentiable w.r.t. whatever critic_fn closes over, so
  the caller can take the gradient of the penalty w.r.t. the critic params.

  Args:
    critic_fn: images (N, H, W, C) -> scores (N,) (or any shape summed per sample).
    real: (N, H, W, C) real images.
    fake: (N, H, W, C) generated images (stop their gradient in the critic step).
    key: PRNG key for the interpolation weights, one U[0, 1) per sample.

  Returns:
    The penalty (scalar, add it with weight lambda = 10 in the paper) and
    {"gp_grad_norm": mean gradient norm}, which should hover around 1.
  """
  if real.shape != fake.shape:
    raise ValueError(
        f"gradient_penalty needs real and fake of the same shape, got {real.shape} and {fake.shape}.")
  mix = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), dtype=real.dtype)
  interpolated = mix * real + (1.0 - mix) * fake
  grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(interpolated)
  per_sample_axes = tuple(range(1, grads.ndim))
  norms = _safe_norm(jnp.sum(jnp.square(grads), axis=per_sample_axes))
  penalty = jnp.mean(jnp.square(norms - 1.0))
  return penalty, {"gp_grad_norm": jnp.mean(norms)}


# Alternatives for the other recipes (survey, seed 002).


def vanilla_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """Binary cross-entropy on logits: -log sigmoid(D(real)) - log(1 - sigmoid(D(fake)))."""
  return jnp.mean(jax.nn.softplus(-real_scores)) + jnp.mean(jax.nn.softplus(fake_scores))


def vanilla_generator_loss(fake_scores: jax.Array) -> jax.Array:
  """Non-saturating -log sigmoid(D(fake)) (Goodfellow et al. 2014): strong early gradients."""
  return jnp.mean(jax.nn.softplus(-fake_scores))


def lsgan_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """Least squares with targets real = 1, fake = 0, halved as in Mao et al. 2017."""
  return 0.5 * jnp.mean(jnp.square(real_scores - 1.0)) + 0.5 * jnp.mean(jnp.square(fake_scores))


def lsgan_generator_loss(fake_scores: jax.Array) -> jax.Array:
  """Least squares pulling D(fake) to the real target 1 (Mao et al. 2017)."""
  return 0.5 * jnp.mean(jnp.square(fake_scores - 1.0))


def hinge_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """Hinge (Lim & Ye 2017, SN-GAN): only scores inside the unit margin contribute."""
  return jnp.mean(jax.nn.relu(1.0 - real_scores)) + jnp.mean(jax.nn.relu(1.0 + fake_scores))


GAN_LOSSES: dict[str, tuple[CriticLossFn, GeneratorLossFn]] = {
    "wgan": (wgan_critic_loss, wgan_generator_loss),
    "vanilla": (vanilla_critic_loss, vanilla_generator_loss),
    "lsgan": (lsgan_critic_loss, lsgan_generator_loss),
    # The hinge generator loss is the WGAN one: -E[D(fake)].
    "hinge": (hinge_critic_loss, wgan_generator_loss),
}


def gan_losses(name: str) -> tuple[CriticLossFn, GeneratorLossFn]:
  """(critic_loss_fn(real_scores, fake_scores), generator_loss_fn(fake_scores)) by name."""
  if name not in GAN_LOSSES:
    raise ValueError(f"Unknown GAN loss {name!r}; choose one of {sorted(GAN_LOSSES)}.")
  return GAN_LOSSES[name]


# Objectives as the step uses them: both losses take (real_logits, fake_logits).


class Objective(NamedTuple):
  d_loss: Callable[[jax.Array, jax.Array], jax.Array]
  g_loss: Callable[[jax.Array, jax.Array], jax.Array]
  uses_real_for_generator: bool = False


def _bce(logits: jax.Array, target: float) -> jax.Array:
  return jnp.mean(target * jax.nn.softplus(-logits) + (1.0 - target) * jax.nn.softplus(logits))


def _ragan(label_smoothing: float) -> Objective:
  """Relativistic average GAN in ESRGAN's form (Wang et al. 2018, eq. 1-2) for both networks."""
  real_target = 1.0 - label_smoothing

  def d_loss(real, fake):
    return 0.5 * (_bce(real - jnp.mean(fake), real_target) + _bce(fake - jnp.mean(real), 0.0))

  def g_loss(real, fake):
    return 0.5 * (_bce(real - jnp.mean(fake), 0.0) + _bce(fake - jnp.mean(real), 1.0))

  return Objective(d_loss, g_loss, uses_real_for_generator=True)


OBJECTIVES = ("wgan", "wgan_gp", "vanilla", "lsgan", "hinge", "ragan")


def make_objective(name: str, *, label_smoothing: float = 0.0) -> Objective:
  """The adversarial objective called `name` (loss.adversarial), with one-sided label smoothing where it applies."""
  if name not in OBJECTIVES:
    raise ValueError(f"Unknown loss.adversarial {name!r}; choose one of {OBJECTIVES}.")
  if name == "ragan":
    return _ragan(label_smoothing)
  if name == "vanilla":
    return Objective(lambda r, f: _bce(r, 1.0 - label_smoothing) + _bce(f, 0.0), lambda r, f: _bce(f, 1.0))
  if label_smoothing:
    raise ValueError(f"loss.label_smoothing applies to the vanilla and ragan objectives, not {name!r}.")
  critic, generator = GAN_LOSSES["wgan" if name == "wgan_gp" else name]
  return Objective(critic, lambda r, f: generator(f))
