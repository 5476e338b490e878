"""Adversarial objectives: WGAN-GP and the usual alternatives, chosen by name.

Every loss takes raw critic outputs (no sigmoid) of any shape, e.g. (N,) from
a global critic or (N, H, W, 1) from a PatchGAN, and averages over all of them.
make_objective(name) gives the pair of losses the step uses.
"""

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

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


def hinge_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """Hinge (Lim & Ye 2017, SN-GAN): only scores inside the unit margin contribute."""
  return jnp.mean(jax.nn.relu(1.0 - real_scores)) + jnp.mean(jax.nn.relu(1.0 + fake_scores))


# Objectives by name: both losses take (real_logits, fake_logits).


class Objective(NamedTuple):
  """The two sides of an adversarial game, both (real_logits, fake_logits) -> scalar.

  d_loss is minimised by the discriminator, g_loss by the generator. Only the
  relativistic objective reads real_logits in g_loss; uses_real_for_generator
  tells the step whether it must run the discriminator on real images in the
  generator update at all.
  """
  d_loss: Callable[[jax.Array, jax.Array], jax.Array]
  g_loss: Callable[[jax.Array, jax.Array], jax.Array]
  uses_real_for_generator: bool


def _bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
  """mean of -[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], stable for any logit.

  -log sigmoid(x) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x).
  """
  return jnp.mean(target * jax.nn.softplus(-logits) + (1.0 - target) * jax.nn.softplus(logits))


def _vanilla_d_loss(real_logits, fake_logits, *, real_target):
  return _bce_with_logits(real_logits, real_target) + _bce_with_logits(fake_logits, 0.0)


def _vanilla_g_loss(real_logits, fake_logits):
  del real_logits  # Non-saturating: -log sigmoid(D(fake)) (Goodfellow et al. 2014).
  return _bce_with_logits(fake_logits, 1.0)


def _lsgan_d_loss(real_logits, fake_logits, *, real_target):
  return (0.5 * jnp.mean(jnp.square(real_logits - real_target)) +
          0.5 * jnp.mean(jnp.square(fake_logits)))


def _lsgan_g_loss(real_logits, fake_logits):
  del real_logits  # Least squares pulling D(fake) to the real target 1, halved (Mao et al. 2017).
  return 0.5 * jnp.mean(jnp.square(fake_logits - 1.0))


def _wgan_g_loss(real_logits, fake_logits):
  del real_logits  # Also the hinge generator loss (Lim & Ye 2017; Miyato et al. 2018).
  return wgan_generator_loss(fake_logits)


def _ragan_d_loss(real_logits, fake_logits, *, real_target):
  """ESRGAN's discriminator loss (Wang et al. 2018, eq. 1), halved.

  D_Ra(a, b) = sigmoid(C(a) - mean C(b)) (Jolicoeur-Martineau 2018): the
  discriminator says how much more realistic a real image is than the average
  fake, and a fake than the average real. Gradients flow through both means,
  as the equation (and ESRGAN's original code) has it.
  """
  real_vs_fake = real_logits - jnp.mean(fake_logits)
  fake_vs_real = fake_logits - jnp.mean(real_logits)
  return 0.5 * (_bce_with_logits(real_vs_fake, real_target) + _bce_with_logits(fake_vs_real, 0.0))


def _ragan_g_loss(real_logits, fake_logits):
  """ESRGAN's generator loss (Wang et al. 2018, eq. 2), halved: the mirror image of the D loss.

  Real logits are constants here (the generator cannot change them); it still
  learns from them, pushing fakes to look more real than the average real.
  """
  real_logits = jax.lax.stop_gradient(real_logits)
  real_vs_fake = real_logits - jnp.mean(fake_logits)
  fake_vs_real = fake_logits - jnp.mean(real_logits)
  return 0.5 * (_bce_with_logits(real_vs_fake, 0.0) + _bce_with_logits(fake_vs_real, 1.0))


def _wgan(real_target: float) -> Objective:
  del real_target
  return Objective(wgan_critic_loss, _wgan_g_loss, uses_real_for_generator=False)


def _hinge(real_target: float) -> Objective:
  del real_target
  return Objective(hinge_critic_loss, _wgan_g_loss, uses_real_for_generator=False)


def _vanilla(real_target: float) -> Objective:
  d_loss = functools.partial(_vanilla_d_loss, real_target=real_target)
  return Objective(d_loss, _vanilla_g_loss, uses_real_for_generator=False)


def _lsgan(real_target: float) -> Objective:
  d_loss = functools.partial(_lsgan_d_loss, real_target=real_target)
  return Objective(d_loss, _lsgan_g_loss, uses_real_for_generator=False)


def _ragan(real_target: float) -> Objective:
  d_loss = functools.partial(_ragan_d_loss, real_target=real_target)
  return Objective(d_loss, _ragan_g_loss, uses_real_for_generator=True)


# name -> (builder taking the discriminator's real target, whether label smoothing means anything).
_OBJECTIVES: dict[str, tuple[Callable[[float], Objective], bool]] = {
    # Arjovsky et al. 2017; no Lipschitz constraint of its own.
    "wgan": (_wgan, False),
    # The same losses; the name tells the step to add gradient_penalty (Gulrajani et al. 2017).
    "wgan_gp": (_wgan, False),
    # Goodfellow et al. 2014, non-saturating generator loss.
    "vanilla": (_vanilla, True),
    # Mao et al. 2017, targets real = 1, fake = 0, halved.
    "lsgan": (_lsgan, True),
    # Lim & Ye 2017; Miyato et al. 2018 (SN-GAN).
    "hinge": (_hinge, False),
    # Relativistic average GAN (Jolicoeur-Martineau 2018) in ESRGAN's form (Wang et al. 2018).
    "ragan": (_ragan, True),
}
OBJECTIVE_NAMES = tuple(_OBJECTIVES)

# Salimans et al. 2016 used a real target of 0.9 (smoothing 0.1); at 0.5 and
# above a real image would be scored as more fake than real.
_MAX_LABEL_SMOOTHING = 0.5


def make_objective(name: str, *, label_smoothing: float = 0.0) -> Objective:
  """The adversarial objective called `name` (loss.adversarial in a config).

  Args:
    name: one of OBJECTIVE_NAMES: wgan, wgan_gp, vanilla, lsgan, hinge, ragan.
    label_smoothing: one-sided label smoothing (Salimans et al. 2016): the
      real target in the discriminator's loss becomes 1 - label_smoothing;
      the generator's targets and the fake target stay. Only for the
      objectives with targets (vanilla, lsgan, ragan), in [0, 0.5).
  """
  if name not in _OBJECTIVES:
    raise ValueError(f"Unknown loss.adversarial {name!r}; choose one of {list(OBJECTIVE_NAMES)}.")
  build, has_targets = _OBJECTIVES[name]
  if not 0.0 <= label_smoothing < _MAX_LABEL_SMOOTHING:
    raise ValueError(
        f"loss.label_smoothing must be in [0, {_MAX_LABEL_SMOOTHING}) (0.1 in Salimans et al. 2016), "
        f"got {label_smoothing!r}.")
  if label_smoothing > 0 and not has_targets:
    with_targets = [n for n, (_, targets) in _OBJECTIVES.items() if targets]
    raise ValueError(
        f"loss.label_smoothing={label_smoothing} means nothing for loss.adversarial={name!r}, which "
        f"has no target labels to smooth; set it to 0 or use one of {with_targets}.")
  return build(1.0 - float(label_smoothing))
