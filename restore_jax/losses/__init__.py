"""Losses by name: reconstruction terms (`loss.terms`) and adversarial objectives (`loss.adversarial`)."""

from restore_jax.losses.adversarial import OBJECTIVES
from restore_jax.losses.adversarial import Objective
from restore_jax.losses.adversarial import gradient_penalty
from restore_jax.losses.adversarial import make_objective
from restore_jax.losses.adversarial import wasserstein_estimate
from restore_jax.losses.perceptual import perceptual_loss
from restore_jax.losses.pixel import charbonnier
from restore_jax.losses.pixel import l1
from restore_jax.losses.pixel import mse
from restore_jax.losses.terms import FROZEN_NETWORKS
from restore_jax.losses.terms import TERMS
from restore_jax.losses.terms import Term
from restore_jax.losses.terms import load_frozen
from restore_jax.losses.terms import make_terms
from restore_jax.losses.terms import register_term

__all__ = ["FROZEN_NETWORKS", "OBJECTIVES", "Objective", "TERMS", "Term", "charbonnier", "gradient_penalty", "l1",
           "load_frozen", "make_objective", "make_terms", "mse", "perceptual_loss", "register_term",
           "wasserstein_estimate"]
