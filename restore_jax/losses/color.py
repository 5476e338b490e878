"""Colour losses: the direction of each pixel's RGB vector, whatever its brightness."""

import jax
import jax.numpy as jnp

# The smallest norm a pixel's colour vector is divided by: about a quarter of
# one 8-bit level on one channel. Below it a pixel is black for any 8-bit
# output and its hue means nothing; the gradient of the cosine, which grows as
# 1 / norm, stays below ~1 / DEFAULT_EPS.
DEFAULT_EPS = 1e-3


def cosine_loss(pred: jax.Array, target: jax.Array, *, eps: float = DEFAULT_EPS) -> jax.Array:
  """Mean over pixels of 1 - cos(angle between the predicted and the target colour vectors).

  Blind to brightness, so it corrects hue shifts that L1 and a per-channel
  SSIM leave (the write-up "Image Restoration Using Generative Adversarial
  Networks" adds it against discolouration). 0 for parallel colours, 1 for
  orthogonal ones.

  Each vector is divided by max(norm, eps), as
  torch.nn.functional.cosine_similarity does: a black pixel (norm 0) has
  cosine 0, so loss 1, with a finite gradient (the norm is
  sqrt(max(|v|^2, eps^2)), never sqrt(0)). A black target pixel thus adds a
  constant 1 and no gradient: it has no colour to match.

  Args:
    pred, target: (..., C) images with colour on the last axis, C >= 2, the same shape.
    eps: floor of the norms, > 0.
  """
  if pred.shape != target.shape:
    raise ValueError(f"cosine_loss needs images of the same shape, got {pred.shape} and {target.shape}.")
  if pred.ndim < 1 or pred.shape[-1] < 2:
    raise ValueError(
        f"cosine_loss compares colour vectors on the last axis and needs at least 2 channels, "
        f"got shape {pred.shape}.")
  if not eps > 0:
    raise ValueError(f"cosine_loss eps must be > 0, got {eps!r}.")
  dtype = jnp.result_type(pred.dtype, jnp.float32)
  pred, target = pred.astype(dtype), target.astype(dtype)
  cosine = jnp.sum(_unit_or_smaller(pred, eps) * _unit_or_smaller(target, eps), axis=-1)
  return jnp.mean(1.0 - cosine)


def _unit_or_smaller(vectors: jax.Array, eps: float) -> jax.Array:
  """v / max(|v|, eps) along the last axis, with a finite gradient at v = 0."""
  squared_norm = jnp.sum(jnp.square(vectors), axis=-1, keepdims=True)
  return vectors / jnp.sqrt(jnp.maximum(squared_norm, eps * eps))
