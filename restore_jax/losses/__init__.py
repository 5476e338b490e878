"""Losses by name: reconstruction terms (`loss.terms`) and adversarial objectives (`loss.adversarial`)."""

from restore_jax.losses.adversarial import OBJECTIVE_NAMES
from restore_jax.losses.adversarial import Objective
from restore_jax.losses.adversarial import gradient_penalty
from restore_jax.losses.adversarial import make_objective
from restore_jax.losses.adversarial import wasserstein_estimate
from restore_jax.losses.color import cosine_loss
from restore_jax.losses.feature_matching import feature_matching_loss
from restore_jax.losses.instance_noise import add_instance_noise
from restore_jax.losses.instance_noise import instance_noise_sigma
from restore_jax.losses.perceptual import perceptual_loss
from restore_jax.losses.pixel import charbonnier
from restore_jax.losses.pixel import l1
from restore_jax.losses.pixel import mse
from restore_jax.losses.ssim import ms_ssim_loss
from restore_jax.losses.terms import FROZEN_NETWORKS
from restore_jax.losses.terms import TERMS
from restore_jax.losses.terms import Term
from restore_jax.losses.terms import load_frozen
from restore_jax.losses.terms import make_terms
from restore_jax.losses.terms import register_term

__all__ = ["FROZEN_NETWORKS", "OBJECTIVE_NAMES", "Objective", "TERMS", "Term", "add_instance_noise", "charbonnier",
           "cosine_loss", "feature_matching_loss", "gradient_penalty", "instance_noise_sigma", "l1", "load_frozen",
           "make_objective", "make_terms", "ms_ssim_loss", "mse", "perceptual_loss", "register_term",
           "wasserstein_estimate"]
