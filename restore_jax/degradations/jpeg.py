"""JPEG compression artefacts from the real codec: Pillow's libjpeg encoder and decoder.

The image is rounded to 8 bits, encoded at a quality drawn per sample, and decoded; chroma is subsampled the
way the encoder does it ("4:2:0" is libjpeg's and Pillow's default for RGB). Real-ESRGAN (Wang et al. 2021,
section 3.1) compresses at quality 30..95, its default range here. Real-ESRGAN itself runs a differentiable
JPEG re-implementation on the GPU; this is the codec users' photos actually went through.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from restore_jax.degradations.base import Degradation, Options, randint
from restore_jax.degradations.registry import register

SUBSAMPLING = ("4:4:4", "4:2:2", "4:2:0")


def to_uint8(img: np.ndarray) -> np.ndarray:
  """[0, 1] floats to 8-bit levels, rounded to nearest (ties to even, as numpy's and torch's round)."""
  return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def compress(img: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
  """Encodes and decodes an HWC float image (1 or 3 channels) with libjpeg; float32 in [0, 1] back."""
  pixels = to_uint8(img)
  gray = pixels.shape[2] == 1
  image = Image.fromarray(pixels[:, :, 0] if gray else pixels, "L" if gray else "RGB")
  buffer = io.BytesIO()
  options = {} if gray else {"subsampling": subsampling}
  image.save(buffer, format="JPEG", quality=int(quality), **options)
  decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
  decoded = decoded[:, :, None] if gray else decoded
  return decoded.astype(np.float32) / np.float32(255.0)


@register("jpeg")
class Jpeg(Degradation):
  """JPEG at an integer quality drawn uniformly from `quality` (1..100)."""

  DEFAULTS = dict(quality=(30, 95), subsampling="4:2:0")

  def __init__(self, opts: Options):
    self.quality = opts.span("quality", low=1, high=100, integer=True)
    self.subsampling = opts.choice("subsampling", SUBSAMPLING)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return compress(img, randint(rng, self.quality), self.subsampling)
