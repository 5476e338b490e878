"""ESRGAN's generator: Residual-in-Residual Dense Blocks (Wang et al. 2018, "ESRGAN").

The layout and the module names follow BasicSR's RRDBNet (conv_first, body_i/rdb{1,2,3}/conv{1..5},
conv_body, conv_up1, conv_up2, conv_hr, conv_last), so its published weights map onto this tree by name.
At num_feat=64, num_block=23, num_grow_ch=32 and scale 4 it has 16,697,987 parameters, as BasicSR's.

Scale 4 has two nearest-x2 + conv upsampling stages, scale 2 one, scale 1 none: same-size restoration runs the
trunk at the input's resolution. (Real-ESRGAN's x2 and x1 models instead pixel-unshuffle the input by 2 or 4 and
keep both upsampling stages, so the trunk runs on 4 or 16 times fewer positions; see Wang et al. 2021,
"Real-ESRGAN", section "Networks and Training". Here the trunk's cost per output pixel at scale 1 is 16 times that
at scale 4: a plain same-size net, best kept small.)
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from restore_jax.models.conv import Conv

# BasicSR initialises the dense-block convs with Kaiming-normal weights multiplied by 0.1
# (basicsr/archs/arch_util.py, default_init_weights(..., 0.1)). Scaling weights by 0.1 scales their variance by
# 0.01. With 23 x 3 residual blocks stacked, unscaled He init makes every block's residual as large as its input
# and the trunk's activations grow with depth; small residuals make each block start near the identity, so the
# deep net trains from scratch (the same reason ESRGAN adds residual scaling).
_RDB_KERNEL_INIT = nn.initializers.variance_scaling(2.0 * 0.1**2, "fan_in", "normal")


_UPSAMPLE_STAGES = {1: 0, 2: 1, 4: 2}  # scale -> nearest-x2 + conv stages.


def _lrelu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, negative_slope=0.2)


@jax.custom_vjp
def _upsample_nearest_x2(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2: every pixel becomes a 2x2 block (what F.interpolate(mode='nearest') does)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _upsample_forward(x):
  return _upsample_nearest_x2(x), None


def _upsample_backward(_, g):
  # Each input pixel's gradient is the sum of its 2x2 block: four strided slices added. The same sum written as
  # a reduction (JAX's own rule) became a fused reduce that took ~0.1 s per step at 128x128x64 on XLA:CPU.
  return (g[:, 0::2, 0::2] + g[:, 0::2, 1::2] + g[:, 1::2, 0::2] + g[:, 1::2, 1::2],)


_upsample_nearest_x2.defvjp(_upsample_forward, _upsample_backward)


class ResidualDenseBlock(nn.Module):
  """Five 3x3 convs, each seeing the block input and every earlier output; the last one's output is scaled
  by `residual_scale` and added to the input."""

  num_feat: int
  num_grow_ch: int
  residual_scale: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = [x]
    for i in range(1, 5):
      conv = Conv(self.num_grow_ch, (3, 3), dtype=self.dtype, kernel_init=_RDB_KERNEL_INIT, name=f"conv{i}")
      features.append(_lrelu(conv(jnp.concatenate(features, axis=-1))))
    conv5 = Conv(self.num_feat, (3, 3), dtype=self.dtype, kernel_init=_RDB_KERNEL_INIT, name="conv5")
    return x + self.residual_scale * conv5(jnp.concatenate(features, axis=-1))


class RRDB(nn.Module):
  """Three dense blocks in a row, wrapped in one more scaled residual connection."""

  num_feat: int
  num_grow_ch: int
  residual_scale: float = 0.2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = x
    for i in range(1, 4):
      y = ResidualDenseBlock(self.num_feat, self.num_grow_ch, self.residual_scale, self.dtype, name=f"rdb{i}")(y)
    return x + self.residual_scale * y


class RRDBNet(nn.Module):
  """Images (N, h, w, C) in [0, 1] -> (N, scale*h, scale*w, out_ch) float32, not clipped.

  Attributes:
    num_feat: channels of the trunk.
    num_block: number of RRDBs in the trunk (23 in ESRGAN).
    num_grow_ch: channels each dense-block conv adds.
    scale: 1, 2 or 4: the number of nearest-x2 + conv upsampling stages is log2(scale).
    out_ch: output channels.
    residual_scale: beta, the factor on every residual branch (0.2 in ESRGAN).
    bicubic_residual: predict only the difference from a bicubic upsampling of the input (global residual
      learning, as in VDSR, Kim et al. 2016). Off in ESRGAN; on, a small network trained for minutes already
      improves on bicubic instead of first having to learn to reproduce it. At scale 1 the input itself is added.
      Needs as many input channels as out_ch.
    dtype: computation dtype; parameters stay float32 so bfloat16 compute keeps float32 master weights.
  """

  num_feat: int = 64
  num_block: int = 23
  num_grow_ch: int = 32
  scale: int = 4
  out_ch: int = 3
  residual_scale: float = 0.2
  bicubic_residual: bool = False
  dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    if self.scale not in _UPSAMPLE_STAGES:
      raise ValueError(
          f"RRDBNet supports scale 1, 2 or 4, got scale={self.scale!r}; set generator.scale to one of "
          f"{sorted(_UPSAMPLE_STAGES)}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # No batch norm or dropout: the same function in training and evaluation.
    if x.ndim != 4:
      raise ValueError(f"RRDBNet expects an NHWC batch of images, got shape {x.shape}.")

    def conv(features: int, name: str) -> Conv:
      return Conv(features, (3, 3), dtype=self.dtype, name=name)

    feat = conv(self.num_feat, "conv_first")(x)
    trunk = feat
    for i in range(self.num_block):
      trunk = RRDB(self.num_feat, self.num_grow_ch, self.residual_scale, self.dtype, name=f"body_{i}")(trunk)
    feat = feat + conv(self.num_feat, "conv_body")(trunk)
    for i in range(1, _UPSAMPLE_STAGES[self.scale] + 1):
      feat = _lrelu(conv(self.num_feat, f"conv_up{i}")(_upsample_nearest_x2(feat)))
    out = conv(self.out_ch, "conv_last")(_lrelu(conv(self.num_feat, "conv_hr")(feat))).astype(jnp.float32)
    if self.bicubic_residual:
      n, h, w, c = x.shape
      if c != self.out_ch:
        raise ValueError(
            f"generator.bicubic_residual needs as many input channels as generator.out_ch={self.out_ch}, got "
            f"{c}; turn it off for this task.")
      base = x.astype(jnp.float32)
      if self.scale > 1:
        base = jax.image.resize(base, (n, h * self.scale, w * self.scale, c), "bicubic")
      out = out + base
    return out
