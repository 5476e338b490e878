"""LPIPS, the learned perceptual image patch similarity (Zhang et al. 2018), v0.1 with AlexNet or VGG16 features.

"The Unreasonable Effectiveness of Deep Features as a Perceptual Metric" (CVPR 2018), section 3: both images go
through a frozen ImageNet classifier; at five layers the activations are unit-normalised along channels, their
squared difference is weighted per channel by a learned non-negative 1x1 linear head, averaged over space, and
the five layer scores are summed. 0 for identical images; larger is more different. Lower is better.

Input convention: images are in [0, 1] at restore_jax's boundary; this module maps them to [-1, 1], the range
LPIPS was trained on, and then applies LPIPS' fixed scaling layer, (x - shift) / scale per channel.

Layers (torchvision's feature extractors that the published linear heads were trained on):
  * alex: the ReLU after each of AlexNet's 5 convs (Krizhevsky 2014, "One weird trick", torchvision's variant:
    64/192/384/256/256 channels, 11x11 stride-4 first conv, 3x3 stride-2 max pools after conv1 and conv2);
  * vgg: VGG16's relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (Simonyan & Zisserman 2015).
In Zhang et al.'s 2AFC experiments the AlexNet variant agrees with people as well as the deeper networks at a
fraction of the cost, and it is the default of their released metric; SR papers also report the VGG variant.

Weights come from lpips_weights.py: params {"backbone": {...}, "lin0" ... "lin4": {"kernel": (1, 1, C, 1)}}.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

NETS = ("alex", "vgg")

# LPIPS' scaling layer (Zhang et al. 2018, lpips v0.1): per-channel shift and scale of RGB in [-1, 1].
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)
# The epsilon of the channel normalisation x / (||x|| + eps).
NORM_EPS = 1e-10

# (name, out channels, kernel, stride, padding, max pool 3x3/2 before this conv) of torchvision's AlexNet.
ALEX_CONVS = (
    ("conv1", 64, 11, 4, 2, False),
    ("conv2", 192, 5, 1, 2, True),
    ("conv3", 384, 3, 1, 1, True),
    ("conv4", 256, 3, 1, 1, False),
    ("conv5", 256, 3, 1, 1, False),
)
# VGG16's stages: widths and convs per stage; LPIPS taps the last ReLU of each stage.
VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
VGG16_CONVS = tuple(
    f"conv{stage + 1}_{i + 1}" for stage, depth in enumerate(VGG16_DEPTHS) for i in range(depth))

# Channels of the five tapped layers, i.e. the inputs of the linear heads lin0 .. lin4.
TAP_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": VGG16_WIDTHS}
# The smallest side whose features still have one pixel at the deepest tap (AlexNet's two 3x3/2 pools after an
# 11x11/4 conv need 31 px; VGG16 halves four times).
MIN_SIZE = {"alex": 31, "vgg": 16}

_PRECISE = jax.lax.Precision.HIGHEST  # A metric: no TF32/bf16 passes on GPU/TPU.


class AlexNetTaps(nn.Module):
  """NHWC (normalised) images -> the ReLU outputs of AlexNet's five convs."""

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    for name, width, kernel, stride, pad, pool_first in ALEX_CONVS:
      if pool_first:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
      x = nn.Conv(width, (kernel, kernel), strides=stride, padding=[(pad, pad)] * 2, precision=_PRECISE,
                  name=name)(x)
      x = nn.relu(x)
      taps.append(x)
    return taps


class VGG16Taps(nn.Module):
  """NHWC (normalised) images -> VGG16's relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    for stage, (width, depth) in enumerate(zip(VGG16_WIDTHS, VGG16_DEPTHS)):
      if stage:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      for i in range(depth):
        x = nn.relu(nn.Conv(width, (3, 3), padding=[(1, 1)] * 2, precision=_PRECISE,
                            name=f"conv{stage + 1}_{i + 1}")(x))
      taps.append(x)
    return taps


def _unit_normalise(features: jax.Array) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(jnp.square(features), axis=-1, keepdims=True))
  return features / (norm + NORM_EPS)


def _backbone(net: str) -> nn.Module:
  if net not in NETS:
    raise ValueError(f"lpips: net must be one of {NETS}, got {net!r}.")
  return AlexNetTaps() if net == "alex" else VGG16Taps()


@functools.lru_cache(maxsize=None)
def param_shapes(net: str) -> dict[str, dict]:
  """The LPIPS param tree's shapes for `net`: {"backbone": {conv: {kernel, bias}}, "lin0".."lin4": {kernel}}."""
  backbone = _backbone(net)
  dummy = jax.ShapeDtypeStruct((1, MIN_SIZE[net], MIN_SIZE[net], 3), jnp.float32)
  variables = jax.eval_shape(lambda x: backbone.init(jax.random.PRNGKey(0), x), dummy)
  shapes = {"backbone": jax.tree.map(lambda s: tuple(s.shape), variables["params"])}
  for index, channels in enumerate(TAP_CHANNELS[net]):
    shapes[f"lin{index}"] = {"kernel": (1, 1, channels, 1)}
  return shapes


def _check_images(net: str, images: jax.Array) -> None:
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"LPIPS expects NHWC RGB batches, got shape {images.shape}.")
  if min(images.shape[1:3]) < MIN_SIZE[net]:
    raise ValueError(f"lpips with net={net!r} needs images of at least {MIN_SIZE[net]} pixels per side, got "
                     f"{images.shape[1]}x{images.shape[2]}.")


@functools.partial(jax.jit, static_argnames="net")
def normalised_taps(params: dict, images: jax.Array, *, net: str) -> list[jax.Array]:
  """NHWC RGB in [0, 1] -> the five tapped feature maps, unit-normalised along channels.

  Maps [0, 1] to [-1, 1] and applies the scaling layer first. Both images of a pair go through this same
  compiled function, so identical images give bit-identical features and LPIPS(x, x) is exactly 0 (one
  program over both would let XLA fuse, and round, the two halves differently).
  """
  _check_images(net, images)
  scaled = ((2.0 * images.astype(jnp.float32) - 1.0) - jnp.asarray(SCALING_SHIFT)) / jnp.asarray(SCALING_SCALE)
  taps = _backbone(net).apply({"params": params["backbone"]}, scaled)
  return [_unit_normalise(t) for t in taps]


@jax.jit
def _weighted_distance(params: dict, taps_x: list[jax.Array], taps_y: list[jax.Array]) -> jax.Array:
  """Sum over layers of the spatial mean of the head-weighted squared differences; (N,)."""
  total = 0.0
  for index, (feats_x, feats_y) in enumerate(zip(taps_x, taps_y)):
    weights = params[f"lin{index}"]["kernel"].reshape(-1)
    per_pixel = jnp.einsum("nhwc,c->nhw", jnp.square(feats_x - feats_y), weights, precision=_PRECISE)
    total = total + jnp.mean(per_pixel, axis=(1, 2))
  return total


def distances(params: dict, x: jax.Array, y: jax.Array, *, net: str) -> jax.Array:
  """LPIPS of NHWC RGB batches in [0, 1] with loaded `params` (lpips_weights.load_lpips_params); (N,)."""
  if net not in NETS:
    raise ValueError(f"lpips: net must be one of {NETS}, got {net!r}.")
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  if x.shape != y.shape:
    raise ValueError(f"LPIPS compares images of the same shape, got {x.shape} and {y.shape}.")
  _check_images(net, x)
  return _weighted_distance(params, normalised_taps(params, x, net=net), normalised_taps(params, y, net=net))
