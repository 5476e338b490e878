"""Feature matching: make the discriminator's view of a generated image match its view of the real one."""

from typing import Sequence

import jax
import jax.numpy as jnp


def feature_matching_loss(real_features: Sequence[jax.Array], fake_features: Sequence[jax.Array]) -> jax.Array:
  """Mean over layers of the mean absolute difference between paired feature maps.

  pix2pixHD's feature-matching loss (Wang et al. 2018, "High-Resolution Image
  Synthesis and Semantic Manipulation with Conditional GANs", eq. 4), up to
  its normalisation: the paper sums the per-layer L1 means over the T layers;
  this takes their mean, so the weight does not depend on the discriminator's
  depth (multiply by T for the paper's value). Features are paired per sample
  (the real image and the image generated from its input), which is what
  makes this a reconstruction term rather than the batch-statistics matching
  of Salimans et al. 2016. The real features are constants: only the
  generator is trained by this loss.

  Args:
    real_features: the discriminator's intermediate features of the real
      images, one array per layer (what it sows as "features").
    fake_features: the same layers for the generated images, same shapes.
  """
  if len(real_features) != len(fake_features) or not real_features:
    raise ValueError(
        f"feature_matching_loss needs the same non-zero number of real and fake feature maps, "
        f"got {len(real_features)} and {len(fake_features)}.")
  per_layer = []
  for index, (real, fake) in enumerate(zip(real_features, fake_features)):
    if real.shape != fake.shape:
      raise ValueError(
          f"feature_matching_loss: layer {index} has real features {real.shape} and fake {fake.shape}.")
    dtype = jnp.result_type(fake.dtype, jnp.float32)
    difference = fake.astype(dtype) - jax.lax.stop_gradient(real).astype(dtype)
    per_layer.append(jnp.mean(jnp.abs(difference)))
  return jnp.mean(jnp.stack(per_layer))
