"""pix2pix's PatchGAN discriminator (Isola et al. 2017, section 3.2.2 and appendix 6.1.2).

C64-C128-C256-C512: 4x4 convs with strides 2, 2, 2, 1 (padding 1), leaky ReLU 0.2, a norm after each but the
first; then a 4x4 stride-1 conv to one channel. Every output logit judges one patch of the input: with
`num_layers` = 3 the patch is 70x70 pixels; 1, 2, 4 and 5 give 16, 34, 142 and 286 (the receptive field grows
from 7 at the two stride-1 convs to 2r + 2 at every stride-2 one). Images are mapped to [-1, 1] first, the range
pix2pix feeds it, so its PyTorch weights map one to one (convs followed by batch norm have no bias, as there).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from restore_jax.models import layers

_MAX_MULTIPLIER = 8  # Widths stop at 8 x num_feat (512).


class PatchGAN(nn.Module):
  """Images (N, H, W, C) in [0, 1] -> logits (N, h, w, 1) float32, one per overlapping patch.

  A conditional discriminator gets the condition and the image concatenated on channels.

  Attributes:
    num_feat: channels of the first conv (64); each further conv doubles them, up to 8 x num_feat.
    num_layers: stride-2 convs (3: the 70x70 PatchGAN).
    norm: "batch" (pix2pix), "instance" or "none". A critic trained with a gradient penalty needs "instance" or
      "none": batch norm makes each image's score depend on the rest of the batch, so the per-image gradient the
      penalty constrains is not the critic's (Gulrajani et al. 2017, section 4).
    dtype: computation dtype; parameters stay float32.
  """

  num_feat: int = 64
  num_layers: int = 3
  norm: str = "batch"
  dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    layers.check_at_least(self.num_feat, 1, "discriminator.num_feat")
    layers.check_at_least(self.num_layers, 1, "discriminator.num_layers")
    layers.check_choice(self.norm, layers.NORMS, "discriminator.norm")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"PatchGAN expects an NHWC batch of images, got shape {x.shape}.")
    # Each stride-2 conv floors the size to half, and the two stride-1 convs take 1 pixel each: at least one
    # logit is left when size // 2**num_layers >= 3.
    smallest = 3 * 2**self.num_layers
    if min(x.shape[1:3]) < smallest:
      raise ValueError(
          f"PatchGAN with discriminator.num_layers={self.num_layers} needs images of at least {smallest}x{smallest}, "
          f"got {x.shape[1]}x{x.shape[2]}; use fewer layers or larger crops.")

    def conv(features: int, stride: int, use_bias: bool, name: str) -> nn.Conv:
      return nn.Conv(features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)), use_bias=use_bias,
                     kernel_init=layers.DCGAN_KERNEL_INIT, dtype=self.dtype, name=name)

    h = layers.lrelu(conv(self.num_feat, 2, True, "conv0")(layers.to_signed(x).astype(self.dtype)))
    self.sow("intermediates", "features", h.astype(jnp.float32))
    for n in range(1, self.num_layers + 1):
      stride = 2 if n < self.num_layers else 1
      h = conv(self.num_feat * min(2**n, _MAX_MULTIPLIER), stride, self.norm != "batch", f"conv{n}")(h)
      h = layers.lrelu(layers.normalization(self.norm, train=train, dtype=self.dtype, name=f"norm{n}")(h))
      self.sow("intermediates", "features", h.astype(jnp.float32))
    logits = conv(1, 1, True, f"conv{self.num_layers + 1}")(h)
    return logits.astype(jnp.float32)
