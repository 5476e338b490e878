"""pix2pix's U-Net generator (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial
Networks", appendix 6.1.1).

Encoder C64-C128-C256-C512-C512-C512-C512-C512: 4x4 convs of stride 2, leaky ReLU 0.2 (before each conv but
the first), batch norm after each but the first and the innermost. Decoder CD512-CD512-CD512-C512-C256-C128-C64:
ReLU, 4x4 transposed conv of stride 2, batch norm, dropout 0.5 in the first three; each decoder output is
concatenated with the encoder output of the same resolution (the skips), and a last transposed conv maps to the
output channels, then tanh.

The network is one recursive level: a down conv, the next level (the rest of the U), an up conv, and the skip.
`num_downs` levels halve the input `num_downs` times (8 for 256 px crops: the innermost map is 1x1).
The innermost down conv has no norm: at 1x1 with pix2pix's batch of one, batch norm would zero it (the
original Torch code leaves it out too). Convs followed by batch norm have no bias (the norm's shift replaces it),
as in pix2pix's PyTorch code, whose unet_256 has the same 54,413,955 parameters so its weights map one to one.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from restore_jax.models import layers


class _UNetLevel(nn.Module):
  """Level `level` of the U: down conv, the deeper levels, up conv back to this level's input resolution."""

  level: int
  widths: tuple[int, ...]  # Channels after each level's down conv.
  up_features: int  # Channels this level's up conv returns.
  norm: str
  dropout_rate: float
  dropout_blocks: int
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    depth = len(self.widths)
    outermost, innermost = self.level == 0, self.level == depth - 1
    use_bias = self.norm != "batch"

    h = x if outermost else layers.lrelu(x)
    h = nn.Conv(self.widths[self.level], (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=use_bias,
                kernel_init=layers.DCGAN_KERNEL_INIT, dtype=self.dtype, name="down")(h)
    if not (outermost or innermost):
      h = layers.normalization(self.norm, train=train, dtype=self.dtype, name="down_norm")(h)
    if not innermost:
      h = _UNetLevel(self.level + 1, self.widths, self.widths[self.level], self.norm, self.dropout_rate,
                     self.dropout_blocks, self.dtype, name=f"level{self.level + 1}")(h, train)

    h = nn.relu(h)
    # A 4x4 transposed conv of stride 2 with PyTorch's padding 1 exactly doubles the size; in lax's terms that is
    # padding kernel - 1 - 1 = 2 on each side of the dilated input.
    h = nn.ConvTranspose(self.up_features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                         use_bias=use_bias or outermost, kernel_init=layers.DCGAN_KERNEL_INIT, dtype=self.dtype,
                         name="up")(h)
    if outermost:
      return h
    h = layers.normalization(self.norm, train=train, dtype=self.dtype, name="up_norm")(h)
    if self.level >= depth - self.dropout_blocks:  # The decoder blocks nearest the bottleneck come first.
      h = nn.Dropout(self.dropout_rate, deterministic=not train, name="up_dropout")(h)
    return jnp.concatenate([x, h], axis=-1)


class UNetGenerator(nn.Module):
  """Images (N, H, W, C) in [0, 1], H and W multiples of 2**num_downs -> (N, H, W, out_ch) float32 in [0, 1].

  Attributes:
    out_ch: output channels.
    num_downs: number of stride-2 levels (8 for 256 px crops as in pix2pix; 6 for 64 px, 5 for 32 px).
    num_feat: channels after the first conv (64); each level doubles them up to `max_feat`.
    max_feat: the cap on channels (512).
    norm: "batch" (pix2pix), "instance" or "none".
    dropout_rate: dropout in the decoder blocks nearest the bottleneck, active only with train=True (0.5).
    dropout_blocks: how many decoder blocks have dropout (3 in pix2pix).
    input_residual: predict only a correction of the input image, out = image + tanh(net), instead of
      (tanh(net) + 1) / 2 (global residual learning, as in VDSR, Kim et al. 2016). Off in pix2pix. The image is
      the input's first out_ch channels (a mask, when the task has one, comes after them), or its one gray channel
      repeated (colorization, keeping its luma: only colour is predicted): with the small initial weights the
      network starts as the identity baseline, so a model trained for minutes corrects the input rather than first
      learning to copy it through the U.
    colour_downscale: with input_residual and a gray input, the colour correction's resolution is 1/this of
      the image's (1: full resolution; see `layers.residual_output`).
    dtype: computation dtype; parameters stay float32.
  """

  out_ch: int = 3
  num_downs: int = 8
  num_feat: int = 64
  max_feat: int = 512
  norm: str = "batch"
  dropout_rate: float = 0.5
  dropout_blocks: int = 3
  input_residual: bool = False
  colour_downscale: int = 1
  dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    layers.check_at_least(self.out_ch, 1, "generator.out_ch")
    layers.check_at_least(self.num_downs, 1, "generator.num_downs")
    layers.check_at_least(self.num_feat, 1, "generator.num_feat")
    layers.check_at_least(self.max_feat, 1, "generator.max_feat")
    layers.check_choice(self.norm, layers.NORMS, "generator.norm")
    layers.check_at_least(self.dropout_blocks, 0, "generator.dropout_blocks")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"generator.dropout_rate must be in [0, 1), got {self.dropout_rate!r}.")
    super().__post_init__()

  @property
  def size_multiple(self) -> int:
    """Input sides must be multiples of this (one halving per level); inference pads up to it."""
    return math.lcm(2**self.num_downs, self.colour_downscale)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    layers.check_divisible(x, 2**self.num_downs, f"generator.num_downs={self.num_downs} halvings")
    widths = tuple(min(self.num_feat * 2**i, self.max_feat) for i in range(self.num_downs))
    h = layers.to_signed(x).astype(self.dtype)
    h = _UNetLevel(0, widths, self.out_ch, self.norm, self.dropout_rate, self.dropout_blocks, self.dtype,
                   name="level0")(h, train)
    if not self.input_residual:
      return layers.tanh_to_unit(h)
    return layers.residual_output(x, h, self.out_ch, self.colour_downscale)
