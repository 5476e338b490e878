"""Bad exposure: out = clip(exposure * img ** gamma, 0, 1).

gamma > 1 crushes the shadows and exposure < 1 scales everything down: a low-light photo (the "bad lighting"
of the lecture "Image restoration with GANs"); gamma < 1 with exposure > 1 gives an over-exposed one. Sensor
noise in the dark, when wanted, is a noise step after this one in a `chain`. This is dm-pix's
`adjust_gamma(image, gamma, gain=exposure)`, done in numpy for the input pipeline.
"""

from __future__ import annotations

import numpy as np

from restore_jax.degradations.base import Degradation, Options, uniform
from restore_jax.degradations.registry import register


@register("exposure")
class Exposure(Degradation):
  """Gamma and exposure scaling, each fixed or drawn per sample; presets `low_light` and `overexposed`."""

  DEFAULTS = dict(gamma=(1.2, 2.5), exposure=(0.2, 0.7))
  PRESETS = dict(low_light=dict(gamma=(1.2, 2.5), exposure=(0.2, 0.7)),
                 overexposed=dict(gamma=(0.4, 0.9), exposure=(1.1, 2.0)))

  def __init__(self, opts: Options):
    self.gamma = opts.span("gamma", above=0.0)
    self.exposure = opts.span("exposure", low=0.0)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gamma, exposure = np.float32(uniform(rng, self.gamma)), np.float32(uniform(rng, self.exposure))
    return np.clip(exposure * np.power(np.clip(img, 0.0, 1.0), gamma), 0.0, 1.0)
