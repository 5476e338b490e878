"""Pixel-wise reconstruction losses: a scalar mean over every element."""

import jax
import jax.numpy as jnp


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error; favours PSNR, blurs where the answer is uncertain."""
  return jnp.mean(jnp.square(pred - target))


def l1(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error; less blurring than MSE for the same PSNR."""
  return jnp.mean(jnp.abs(pred - target))


def charbonnier(pred: jax.Array, target: jax.Array, eps: float = 1e-3) -> jax.Array:
  """Mean of sqrt(d^2 + eps^2): a smooth L1 whose gradient is defined at d = 0.

  eps = 1e-3 as in LapSRN (Lai et al. 2017).
  """
  return jnp.mean(jnp.sqrt(jnp.square(pred - target) + eps * eps))
