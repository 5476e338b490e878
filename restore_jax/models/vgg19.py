"""VGG19's convolutional features (Simonyan & Zisserman 2015), for perceptual losses.

Sixteen 3x3 convs in five stages of (2, 2, 4, 4, 4), widths (64, 128, 256, 512, 512), a ReLU after each conv and
a 2x2 max pool between stages. Params are named by layer (`params["conv3_2"]["kernel"]`, HWIO) so a weights
loader (vgg19_weights.py) fills the tree by name.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

STAGE_WIDTHS = (64, 128, 256, 512, 512)
STAGE_DEPTHS = (2, 2, 4, 4, 4)
LAYER_NAMES: tuple[str, ...] = tuple(
    f"conv{stage + 1}_{i + 1}" for stage, depth in enumerate(STAGE_DEPTHS) for i in range(depth))

# The statistics torchvision's ImageNet models were trained with, for RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_shapes(in_channels: int = 3) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
  """{layer name: (kernel shape HWIO, bias shape)} for every conv of VGG19."""
  shapes = {}
  for stage, (width, depth) in enumerate(zip(STAGE_WIDTHS, STAGE_DEPTHS)):
    for i in range(depth):
      shapes[f"conv{stage + 1}_{i + 1}"] = ((3, 3, in_channels, width), (width,))
      in_channels = width
  return shapes


class VGG19Features(nn.Module):
  """Images (N, H, W, 3) in [0, 1] -> {layer name: feature map} for the requested layers.

  Attributes:
    layers: names among conv1_1 .. conv5_4; only the layers up to the deepest one are built and run.
    before_activation: return the conv output before its ReLU (ESRGAN uses conv5_4 this way: after the ReLU
      most of that layer is zero, which weakens the loss).
    normalize_input: subtract the ImageNet mean and divide by its std, the input convention of torchvision's
      weights (vgg19_weights.py converts other formats to it).
    dtype: computation dtype.
  """

  layers: Sequence[str] = ("conv5_4",)
  before_activation: bool = True
  normalize_input: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    unknown = [name for name in self.layers if name not in LAYER_NAMES]
    if unknown or not self.layers:
      raise ValueError(f"Unknown VGG19 layers {unknown or list(self.layers)}; choose among {list(LAYER_NAMES)}.")
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"VGG19Features expects NHWC RGB images, got shape {x.shape}.")
    if self.normalize_input:
      x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    deepest = max(LAYER_NAMES.index(name) for name in self.layers)
    wanted = set(self.layers)
    features = {}
    for name, (kernel_shape, _) in list(conv_shapes().items())[:deepest + 1]:
      if name.endswith("_1") and name != "conv1_1":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = nn.Conv(kernel_shape[-1], (3, 3), dtype=self.dtype, name=name)(x)
      if name in wanted and self.before_activation:
        features[name] = x
      x = nn.relu(x)
      if name in wanted and not self.before_activation:
        features[name] = x
    return features
