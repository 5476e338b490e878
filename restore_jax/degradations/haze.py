"""Haze: the atmospheric scattering model I = J t + A (1 - t).

J is the clean image, A the airlight (the colour of the haze, a gray level here), t in [0, 1] the
transmission: the fraction of the scene's light that reaches the camera (Koschmieder's law, t = exp(-beta d)
at depth d; the model dehazing work builds on, e.g. He et al. 2009, "Single Image Haze Removal Using Dark
Channel Prior"). The lecture "Image restoration with GANs" lists haze among the degradations.

depth "uniform": one t for the whole image. depth "ramp": a depth-like linear ramp in a random direction,
from a near edge (t_near) to a far edge (t_far < t_near), with t exponential in the depth as Koschmieder says;
t_near and t_far are two draws from `transmission`.
"""

from __future__ import annotations

import math

import numpy as np

from restore_jax.degradations.base import Degradation, Options, uniform
from restore_jax.degradations.registry import register

_MIN_T = 1e-6  # Keeps log(t) finite on the ramp; t below it is airlight to float32 precision anyway.


@register("haze")
class Haze(Degradation):
  """Adds haze; t = 1 leaves the image as it is, t = 0 replaces it by the airlight."""

  DEFAULTS = dict(transmission=(0.3, 0.9), airlight=(0.7, 1.0), depth="uniform")

  def __init__(self, opts: Options):
    self.transmission = opts.span("transmission", low=0.0, high=1.0)
    self.airlight = opts.span("airlight", low=0.0, high=1.0)
    self.depth = opts.choice("depth", ("uniform", "ramp"))

  def transmission_map(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """t as an (h, w, 1) float32 map (constant for depth "uniform")."""
    if self.depth == "uniform":
      return np.full(shape + (1,), uniform(rng, self.transmission), np.float32)
    first, second = uniform(rng, self.transmission), uniform(rng, self.transmission)
    near, far = max(first, second, _MIN_T), max(min(first, second), _MIN_T)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    along = x * math.cos(angle) + y * math.sin(angle)
    depth = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)  # 0 near .. 1 far.
    log_t = math.log(near) + depth * (math.log(far) - math.log(near))
    return np.exp(log_t, dtype=np.float32)[:, :, None]

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    t = self.transmission_map(img.shape[:2], rng)
    airlight = np.float32(uniform(rng, self.airlight))
    return np.clip(img * t + airlight * (1.0 - t), 0.0, 1.0)
