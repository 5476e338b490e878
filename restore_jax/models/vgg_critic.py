"""VGG-style critic for WGAN-GP: the SRGAN / ESRGAN discriminator without batch norm.

Five stages, each a 3x3 conv then a strided 4x4 conv that halves the resolution, with widths
num_feat x (1, 2, 4, 8, 8) (BasicSR's VGGStyleDiscriminator layout), then two dense layers.
There is no batch norm: the WGAN-GP penalty constrains the norm of the critic's gradient with respect to each
input independently, and batch norm makes each output depend on the whole batch, so that per-sample
gradient is no longer what is penalised (Gulrajani et al. 2017, "Improved Training of Wasserstein GANs",
section 4; they suggest layer norm or none). There is no sigmoid either: a Wasserstein critic outputs a score.
Each stage's output is sown into "intermediates" for a feature-matching loss.

`norm="batch"` gives the discriminator of ESRGAN's relativistic GAN instead (BasicSR's VGGStyleDiscriminator;
SRGAN's, Ledig et al. 2017, Figure 4): batch norm after every conv but the first, those convs without a bias.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from restore_jax.models import layers
from restore_jax.models.conv import Conv

_WIDTH_MULTIPLIERS = (1, 2, 4, 8, 8)
_DOWNSAMPLE = 2 ** len(_WIDTH_MULTIPLIERS)  # Each stage halves the resolution once.


def _lrelu(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, negative_slope=0.2)


class VGGCritic(nn.Module):
  """Images (N, input_size, input_size, C) in [0, 1] -> scores (N,) float32.

  Attributes:
    num_feat: width of the first stage (64 in SRGAN / ESRGAN).
    input_size: the crop size it is built for; the dense layer's input size depends on it, so it must be a
      multiple of 32 and every input must have exactly this height and width.
    norm: "none" (WGAN-GP), "batch" (SRGAN / ESRGAN) or "instance", after every conv but the first.
    dtype: computation dtype; parameters stay float32.
  """

  num_feat: int = 64
  input_size: int = 128
  norm: str = "none"
  dtype: Any = jnp.float32

  def __post_init__(self) -> None:
    layers.check_choice(self.norm, layers.NORMS, "discriminator.norm")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if self.input_size % _DOWNSAMPLE:
      raise ValueError(
          f"VGGCritic input_size must be a multiple of {_DOWNSAMPLE} (five stride-2 stages), got "
          f"{self.input_size}; change discriminator.input_size (and the crop size).")
    if x.ndim != 4 or x.shape[1:3] != (self.input_size, self.input_size):
      raise ValueError(
          f"VGGCritic was built for {self.input_size}x{self.input_size} NHWC inputs, got shape {x.shape}; "
          "set discriminator.input_size to the HR crop size.")
    normed = self.norm != "none"

    def norm(h: jax.Array, name: str) -> jax.Array:
      return layers.normalization(self.norm, train=train, dtype=self.dtype, name=name)(h)

    for stage, multiplier in enumerate(_WIDTH_MULTIPLIERS):
      width = self.num_feat * multiplier
      x = Conv(width, (3, 3), use_bias=not (normed and stage > 0), dtype=self.dtype, name=f"conv{stage}_0")(x)
      if stage > 0:
        x = norm(x, f"norm{stage}_0")
      x = _lrelu(x)
      # 4x4 kernel, stride 2, padding 1: exactly halves an even size (as the torch reference does).
      x = Conv(width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=not normed, dtype=self.dtype,
               name=f"conv{stage}_1")(x)
      x = _lrelu(norm(x, f"norm{stage}_1"))
      self.sow("intermediates", "features", x.astype(jnp.float32))
    x = x.reshape(x.shape[0], -1)
    x = _lrelu(nn.Dense(100, dtype=self.dtype, name="linear1")(x))
    x = nn.Dense(1, dtype=self.dtype, name="linear2")(x)
    return x[:, 0].astype(jnp.float32)
