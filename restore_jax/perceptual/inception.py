"""The Inception-v3 that FID is defined with, up to its 2048-d pool3 features, in Flax.

FID (Heusel et al. 2017) compares statistics of the pool3 activations of one particular network: TensorFlow's
Inception-v3 graph of 2015-12-05 (Szegedy et al. 2016, "Rethinking the Inception Architecture"). Its PyTorch
port, pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, is the weights file read here. That graph differs
from torchvision's Inception-v3 in four places, kept here:
  * Mixed_5b/5c/5d (block A), Mixed_6b-6e (block C) and Mixed_7b (block E): the average pool of the pool
    branch divides by the number of real (unpadded) pixels;
  * Mixed_7c (the last block E): its pool branch is a 3x3 max pool, not an average pool.
Input: RGB in [0, 1], resized to 299x299 bilinearly (half-pixel centres, no antialiasing: torch's
F.interpolate(mode="bilinear", align_corners=False), as pytorch-fid does), then mapped to [-1, 1].

Module and parameter names follow the torch state dict (`Mixed_6b.branch7x7_2.conv.weight` is
params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]), so loading is a rename and a transpose
(inception_weights.py). `width_divisor` divides every conv's output channels (1 for the real network; tests use
a narrower copy to compare with a torch implementation cheaply).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

INPUT_SIZE = 299
FEATURES = 2048  # pool3 width at width_divisor=1.
BN_EPSILON = 1e-3  # The graph's batch-norm epsilon.

_PRECISE = jax.lax.Precision.HIGHEST  # A metric: no TF32/bf16 passes on GPU/TPU.


class ConvBN(nn.Module):
  """Conv (no bias), batch norm with frozen statistics, ReLU: torchvision's BasicConv2d."""

  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad_h, pad_w = self.padding
    x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=[(pad_h, pad_h), (pad_w, pad_w)],
                use_bias=False, precision=_PRECISE, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  """3x3 stride-1 average over the real pixels only (the border windows divide by fewer than 9)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class BlockA(nn.Module):
  """Mixed_5b-5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1."""

  pool_features: int
  div: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.div
    b1 = ConvBN(64 // d, (1, 1), name="branch1x1")(x)
    b5 = ConvBN(48 // d, (1, 1), name="branch5x5_1")(x)
    b5 = ConvBN(64 // d, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = ConvBN(64 // d, (1, 1), name="branch3x3dbl_1")(x)
    b3 = ConvBN(96 // d, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = ConvBN(96 // d, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = ConvBN(self.pool_features // d, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class BlockB(nn.Module):
  """Mixed_6a, the 35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | max pool/2."""

  div: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.div
    b3 = ConvBN(384 // d, (3, 3), strides=2, name="branch3x3")(x)
    bd = ConvBN(64 // d, (1, 1), name="branch3x3dbl_1")(x)
    bd = ConvBN(96 // d, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = ConvBN(96 // d, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class BlockC(nn.Module):
  """Mixed_6b-6e: 1x1 | factorised 7x7 | twice-factorised 7x7 | avg pool-1x1."""

  channels_7x7: int
  div: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d, c7 = self.div, self.channels_7x7 // self.div
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b1 = ConvBN(192 // d, (1, 1), name="branch1x1")(x)
    b7 = ConvBN(c7, (1, 1), name="branch7x7_1")(x)
    b7 = ConvBN(c7, **row, name="branch7x7_2")(b7)
    b7 = ConvBN(192 // d, **col, name="branch7x7_3")(b7)
    bd = ConvBN(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = ConvBN(c7, **col, name="branch7x7dbl_2")(bd)
    bd = ConvBN(c7, **row, name="branch7x7dbl_3")(bd)
    bd = ConvBN(c7, **col, name="branch7x7dbl_4")(bd)
    bd = ConvBN(192 // d, **row, name="branch7x7dbl_5")(bd)
    bp = ConvBN(192 // d, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class BlockD(nn.Module):
  """Mixed_7a, the 17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool/2."""

  div: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.div
    b3 = ConvBN(192 // d, (1, 1), name="branch3x3_1")(x)
    b3 = ConvBN(320 // d, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = ConvBN(192 // d, (1, 1), name="branch7x7x3_1")(x)
    b7 = ConvBN(192 // d, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = ConvBN(192 // d, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = ConvBN(192 // d, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class BlockE(nn.Module):
  """Mixed_7b/7c: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1; the pool is an average in Mixed_7b and
  a 3x3 max in Mixed_7c (the FID graph's quirk)."""

  max_pool_branch: bool
  div: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.div
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    b1 = ConvBN(320 // d, (1, 1), name="branch1x1")(x)
    b3 = ConvBN(384 // d, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([ConvBN(384 // d, **row, name="branch3x3_2a")(b3),
                          ConvBN(384 // d, **col, name="branch3x3_2b")(b3)], axis=-1)
    bd = ConvBN(448 // d, (1, 1), name="branch3x3dbl_1")(x)
    bd = ConvBN(384 // d, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([ConvBN(384 // d, **row, name="branch3x3dbl_3a")(bd),
                          ConvBN(384 // d, **col, name="branch3x3dbl_3b")(bd)], axis=-1)
    if self.max_pool_branch:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3(x)
    bp = ConvBN(192 // d, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """NHWC images already at 299x299 and in [-1, 1] -> (N, 2048 // width_divisor) pool3 features."""

  width_divisor: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.width_divisor
    x = ConvBN(32 // d, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = ConvBN(32 // d, (3, 3), name="Conv2d_2a_3x3")(x)
    x = ConvBN(64 // d, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = ConvBN(80 // d, (1, 1), name="Conv2d_3b_1x1")(x)
    x = ConvBN(192 // d, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = BlockA(32, d, name="Mixed_5b")(x)
    x = BlockA(64, d, name="Mixed_5c")(x)
    x = BlockA(64, d, name="Mixed_5d")(x)
    x = BlockB(d, name="Mixed_6a")(x)
    for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = BlockC(channels_7x7, d, name=name)(x)
    x = BlockD(d, name="Mixed_7a")(x)
    x = BlockE(False, d, name="Mixed_7b")(x)
    x = BlockE(True, d, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


def resize_to_input(images: jax.Array) -> jax.Array:
  """NHWC -> (N, 299, 299, C), bilinear with half-pixel centres and no antialiasing (torch's F.interpolate
  bilinear, align_corners=False)."""
  batch, _, _, channels = images.shape
  return jax.image.resize(images.astype(jnp.float32), (batch, INPUT_SIZE, INPUT_SIZE, channels), "linear",
                          antialias=False)


@functools.lru_cache(maxsize=None)
def variable_shapes(width_divisor: int = 1) -> dict:
  """{"params": ..., "batch_stats": ...} shapes of the network (no weights, no compute; traced once)."""
  dummy = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: FIDInceptionV3(width_divisor).init(jax.random.PRNGKey(0), x), dummy)
  return jax.tree.map(lambda s: tuple(s.shape), variables)
