"""Losses by name: pixel, structural, colour, perceptual and adversarial terms that configs combine."""

from typing import Callable

from restore_jax.losses.adversarial import gan_losses
from restore_jax.losses.adversarial import gradient_penalty
from restore_jax.losses.adversarial import make_objective
from restore_jax.losses.adversarial import Objective
from restore_jax.losses.adversarial import OBJECTIVE_NAMES
from restore_jax.losses.adversarial import wasserstein_estimate
from restore_jax.losses.adversarial import wgan_critic_loss
from restore_jax.losses.adversarial import wgan_generator_loss
from restore_jax.losses.color import cosine_loss
from restore_jax.losses.feature_matching import feature_matching_loss
from restore_jax.losses.instance_noise import add_instance_noise
from restore_jax.losses.instance_noise import instance_noise_sigma
from restore_jax.losses.perceptual import perceptual_loss
from restore_jax.losses.pixel import charbonnier
from restore_jax.losses.pixel import l1
from restore_jax.losses.pixel import mse
from restore_jax.losses.ssim import ms_ssim_loss

PIXEL_LOSSES: dict[str, Callable] = {"mse": mse, "l1": l1, "charbonnier": charbonnier}


def pixel_loss(name: str) -> Callable:
  """The pixel loss (pred, target) -> scalar called `name` in a config."""
  if name not in PIXEL_LOSSES:
    raise ValueError(f"Unknown pixel loss {name!r}; choose one of {sorted(PIXEL_LOSSES)}.")
  return PIXEL_LOSSES[name]
