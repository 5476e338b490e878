"""Grayscale, the input of colorization: ITU-R BT.601 luma, one channel.

Y = 0.299 R + 0.587 G + 0.114 B, the luma of JPEG's Y'CbCr and of Pillow's convert("L") (which rounds it to
8 bits); not scikit-image's rgb2gray, which uses BT.709's 0.2125 / 0.7154 / 0.0721. Colorization with
pix2pix (Isola et al. 2017), as in Harshith J L et al., "Recovering Old or Damaged Images using GAN", feeds
the generator this one channel and asks for three.
"""

from __future__ import annotations

import numpy as np

from restore_jax.degradations.base import Degradation, Options
from restore_jax.degradations.noise import luma
from restore_jax.degradations.registry import register


@register("grayscale")
class Grayscale(Degradation):
  """RGB -> BT.601 luma, (h, w, 1); on a real photo too (`prepare`), since that is all the model takes."""

  DEFAULTS: dict = {}

  def __init__(self, opts: Options):
    del opts

  def output_channels(self, channels: int) -> int:
    return 1

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return luma(img)

  def prepare_input(self, photo: np.ndarray) -> np.ndarray:
    return luma(photo)
