"""Real-ESRGAN's U-Net discriminator with spectral normalisation (Wang et al. 2021, "Real-ESRGAN: Training
Real-World Blind Super-Resolution with Pure Synthetic Data", section "Networks and Training" and Fig. 6).

A 3x3 conv, three 4x4 stride-2 convs down (widths num_feat x 2, 4, 8), three bilinear x2 upsamplings each
followed by a 3x3 conv back to the mirrored width and added to the encoder map of that size (the skips), two more
3x3 convs and a 3x3 conv to one channel: a realness logit for every pixel, so the generator gets a detailed
per-pixel signal. Every conv but the first and the last is spectrally normalised (Miyato et al. 2018) and has no
bias: the paper adds spectral norm because the U-Net and the harsher degradations make training less stable, and
finds it also tempers GAN over-sharpening. Leaky ReLU 0.2 throughout.
The power iteration's vector u sits in `batch_stats` and moves only with train=True.
The layer names (conv0 ... conv9) are BasicSR's, so its weights map by name.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from restore_jax.models import layers


def _upsample_bilinear_x2(x: jax.Array) -> jax.Array:
  """Bilinear x2 with half-pixel centres (PyTorch's F.interpolate(mode='bilinear', align_corners=False))."""
  n, h, w, c = x.shape
  return jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")


class UNetDiscriminatorSN(nn.Module):
  """Images (N, H, W, C) in [0, 1], H and W multiples of 8 -> logits (N, H, W, 1) float32.

  Attributes:
    num_feat: channels of the first conv (64 in Real-ESRGAN).
    skip_connection: add each encoder map to the decoder map of the same size (True in Real-ESRGAN).
    dtype: computation dtype; parameters and the spectral-norm state stay float32.
  """

  num_feat: int = 64
  skip_connection: bool = True
  dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    layers.check_at_least(self.num_feat, 1, "discriminator.num_feat")
    layers.check_choice(self.skip_connection, (True, False), "discriminator.skip_connection")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    layers.check_divisible(x, 8, "three stride-2 convs and three x2 upsamplings")
    nf = self.num_feat

    def plain_conv(features: int, name: str):
      return nn.Conv(features, (3, 3), dtype=self.dtype, name=name)

    def sn_conv(features: int, name: str, kernel: int = 3, stride: int = 1):
      conv = nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((1, 1), (1, 1)),
                     use_bias=False, dtype=self.dtype, name=name)
      # The same power iteration as torch.nn.utils.spectral_norm: one step per call, eps 1e-12.
      return lambda h: nn.SpectralNorm(conv, n_steps=1, epsilon=1e-12, name=f"{name}_sn")(h, update_stats=train)

    def block(h: jax.Array) -> jax.Array:
      h = layers.lrelu(h)
      self.sow("intermediates", "features", h.astype(jnp.float32))
      return h

    x0 = block(plain_conv(nf, "conv0")(x.astype(self.dtype)))
    x1 = block(sn_conv(nf * 2, "conv1", kernel=4, stride=2)(x0))
    x2 = block(sn_conv(nf * 4, "conv2", kernel=4, stride=2)(x1))
    x3 = block(sn_conv(nf * 8, "conv3", kernel=4, stride=2)(x2))

    h = x3
    for name, width, skip in (("conv4", nf * 4, x2), ("conv5", nf * 2, x1), ("conv6", nf, x0)):
      h = layers.lrelu(sn_conv(width, name)(_upsample_bilinear_x2(h)))
      if self.skip_connection:
        h = h + skip
      self.sow("intermediates", "features", h.astype(jnp.float32))

    h = block(sn_conv(nf, "conv7")(h))
    h = block(sn_conv(nf, "conv8")(h))
    return plain_conv(1, "conv9")(h).astype(jnp.float32)
