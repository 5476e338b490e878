"""The encoder-decoder "image translator" (Liu Shiqiang, "GAN Network Image Translator: Image Restoration and
Enhancement", code lsqpku/img2img), built from DCGAN's two halves (Radford et al. 2016, section 3).

DCGAN's discriminator becomes the encoder: 5x5 convs of stride 2 with batch norm (not on the first) and leaky
ReLU 0.2, widths num_feat x (1, 2, 4, 8). DCGAN's generator becomes the decoder: 5x5 transposed convs of
stride 2 with batch norm and ReLU back to the input resolution, the last one to the output channels and tanh.
There are no skip connections and no dense bottleneck, so every detail of the output passes through the
16x-downsampled code (at depth 4): a plain L2 autoencoder blurs, which is what the source's deblurring results show
and why its author points to pix2pix next. Padding is TensorFlow's "SAME", as in the source's TensorFlow code.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from restore_jax.models import layers

_MAX_MULTIPLIER = 8  # DCGAN's widths stop at 8 x num_feat (64-128-256-512).


class ImageTranslator(nn.Module):
  """Images (N, H, W, C) in [0, 1], H and W multiples of 2**num_downs -> (N, H, W, out_ch) float32 in [0, 1].

  Attributes:
    out_ch: output channels.
    num_downs: stride-2 convs in the encoder, and transposed convs in the decoder (4 in the source).
    num_feat: channels of the first conv (64); each deeper one doubles them, up to 8 x num_feat.
    norm: "batch" (the source), "instance" or "none".
    input_residual: predict only a correction of the input image, out = image + tanh(net), instead of
      (tanh(net) + 1) / 2 (global residual learning, as in VDSR, Kim et al. 2016). Off in the source. Without skip
      connections the plain translator must carry every detail through its code, so a model trained for minutes
      blurs; with it the network starts as the identity and learns the sharpening. The image is the input's
      first out_ch channels, or its one gray channel repeated.
    colour_downscale: with input_residual and a gray input, the colour correction's resolution is 1/this of
      the image's (1: full resolution; see `layers.residual_output`).
    dtype: computation dtype; parameters stay float32.
  """

  out_ch: int = 3
  num_downs: int = 4
  num_feat: int = 64
  norm: str = "batch"
  input_residual: bool = False
  colour_downscale: int = 1
  dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    layers.check_at_least(self.out_ch, 1, "generator.out_ch")
    layers.check_at_least(self.num_downs, 1, "generator.num_downs")
    layers.check_at_least(self.num_feat, 1, "generator.num_feat")
    layers.check_choice(self.norm, layers.NORMS, "generator.norm")
    super().__post_init__()

  @property
  def size_multiple(self) -> int:
    """Input sides must be multiples of this (one halving per level); inference pads up to it."""
    return math.lcm(2**self.num_downs, self.colour_downscale)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    layers.check_divisible(x, 2**self.num_downs, f"generator.num_downs={self.num_downs} halvings")
    widths = [self.num_feat * min(2**i, _MAX_MULTIPLIER) for i in range(self.num_downs)]
    use_bias = self.norm != "batch"  # Batch norm's shift makes a bias before it redundant.

    def norm(name: str):
      return layers.normalization(self.norm, train=train, dtype=self.dtype, name=name)

    h = layers.to_signed(x).astype(self.dtype)
    for i, width in enumerate(widths):
      h = nn.Conv(width, (5, 5), strides=(2, 2), padding="SAME", use_bias=use_bias or i == 0,
                  kernel_init=layers.DCGAN_KERNEL_INIT, dtype=self.dtype, name=f"enc{i}")(h)
      if i > 0:
        h = norm(f"enc{i}_norm")(h)
      h = layers.lrelu(h)

    decoder_widths = widths[-2::-1] + [self.out_ch]  # Mirrors the encoder, then the image.
    for i, width in enumerate(decoder_widths):
      last = i == len(decoder_widths) - 1
      h = nn.ConvTranspose(width, (5, 5), strides=(2, 2), padding="SAME", use_bias=use_bias or last,
                           kernel_init=layers.DCGAN_KERNEL_INIT, dtype=self.dtype, name=f"dec{i}")(h)
      if not last:
        h = nn.relu(norm(f"dec{i}_norm")(h))
    if not self.input_residual:
      return layers.tanh_to_unit(h)
    return layers.residual_output(x, h, self.out_ch, self.colour_downscale)
