"""Instance noise: blur the line between real and fake for the discriminator early in training.

Early on, real and generated images lie on nearly disjoint manifolds, where a
discriminator can be perfect and its gradients useless (Arjovsky & Bottou
2017). Gaussian noise added to everything the discriminator sees makes the two
distributions overlap; annealing it to 0 recovers the original game (Sønderby
et al. 2017, "Amortised MAP Inference for Image Super-resolution").
"""

import numbers

import jax
import jax.numpy as jnp


def instance_noise_sigma(step: jax.Array | int, *, initial: float, anneal_steps: int) -> jax.Array:
  """initial * max(0, 1 - step / anneal_steps): the noise level at `step`, linear to 0.

  `step` may be traced (the step counter inside a jitted update); the result
  is a float32 scalar.

  Args:
    step: the training step (0 at the start).
    initial: the noise standard deviation at step 0, >= 0, in image units ([0, 1] images).
    anneal_steps: steps until the noise reaches 0, >= 1.
  """
  if not initial >= 0:
    raise ValueError(f"loss.instance_noise.initial must be >= 0, got {initial!r}.")
  if not isinstance(anneal_steps, numbers.Integral) or isinstance(anneal_steps, bool) or anneal_steps < 1:
    raise ValueError(f"loss.instance_noise.anneal_steps must be an integer >= 1, got {anneal_steps!r}.")
  # Steps left, not 1 - step / anneal_steps: exactly 0 from anneal_steps on,
  # even where the compiler divides by multiplying with a rounded reciprocal.
  steps_left = jnp.clip(anneal_steps - jnp.asarray(step, jnp.float32), 0.0, anneal_steps)
  return jnp.float32(initial) * steps_left / anneal_steps


def add_instance_noise(images: jax.Array, key: jax.Array, sigma: jax.Array | float) -> jax.Array:
  """images + sigma * N(0, 1), fresh noise per element, in the images' dtype.

  Apply it to real and generated images alike (with different keys), right
  before the discriminator; the generator's own losses see clean images.
  sigma = 0 returns the images unchanged.
  """
  noise = jax.random.normal(key, images.shape, images.dtype)
  return images + jnp.asarray(sigma, images.dtype) * noise
