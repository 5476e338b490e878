"""Damage, the input of old-photo restoration (inpainting): scratches, blotches and holes, filled in.

Harshith J L et al., "Recovering Old or Damaged Images using GAN", train a pix2pix U-Net on masked images
and their originals. Here a mask is drawn from scratches (thin curves), blotches (filled blobs), rectangular
holes and free-form brush strokes (restore_jax.degradations.masks), shape by shape until it covers a
fraction drawn from `coverage`; its pixels are filled with a constant (white by default) or uniform noise,
every other pixel is left untouched, and the mask comes back as `mask` (1 = missing).

On a real photo, `prepare` takes the user's mask, or finds the missing pixels as those equal to the fill
value in every channel: pure white (1.0) by default, which is how people mark damage with a paint tool.
"""

from __future__ import annotations

import numpy as np

from restore_jax.degradations import masks
from restore_jax.degradations.base import Degradation, Options, as_image, uniform
from restore_jax.degradations.registry import register

KINDS = ("scratch", "blotch", "hole", "free_form")
FILLS = ("constant", "noise")
MAX_SHAPES = 400  # A bound on the drawing loop; the coverage is reached long before on any sane setting.
STOP_FRACTION = 0.002  # Stop when the coverage is within this fraction of the image of its aim.


@register("damage")
class Damage(Degradation):
  """Masks a fraction `coverage` of the image with shapes drawn in proportion to the *_weight keys (0 turns a
  kind off); sizes are fractions of the image's shorter side."""

  DEFAULTS = dict(coverage=(0.05, 0.25), scratch_weight=0.4, blotch_weight=0.3, hole_weight=0.15,
                  free_form_weight=0.15, scratch_width=(0.004, 0.012), blotch_radius=(0.02, 0.08),
                  hole_size=(0.1, 0.3), stroke_width=(0.03, 0.08), fill="constant", fill_value=1.0)
  makes_mask = True

  def __init__(self, opts: Options):
    self.coverage = opts.span("coverage", low=0.0, high=1.0)
    weights = [opts.number(f"{kind}_weight", low=0.0) for kind in KINDS]
    if sum(weights) <= 0:
      raise ValueError(f"At least one of {', '.join(opts.key(k + '_weight') for k in KINDS)} must be > 0.")
    self.kind_probs = np.asarray(weights) / sum(weights)
    self.scratch_width = opts.span("scratch_width", low=0.0, high=1.0)
    self.blotch_radius = opts.span("blotch_radius", low=0.0, high=1.0)
    self.hole_size = opts.span("hole_size", low=0.0, high=1.0)
    self.stroke_width = opts.span("stroke_width", low=0.0, high=1.0)
    self.fill = opts.choice("fill", FILLS)
    self.fill_value = opts.number("fill_value", low=0.0, high=1.0)

  def draw_mask(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A boolean (h, w) mask covering about a `coverage` draw of the image."""
    height, width = shape
    side = min(height, width)
    mask = np.zeros(shape, bool)
    aim = uniform(rng, self.coverage) * height * width
    stop = max(1.0, STOP_FRACTION * height * width)
    covered = 0
    for _ in range(MAX_SHAPES):
      budget = aim - covered
      if budget < stop:
        break
      kind = KINDS[int(rng.choice(len(KINDS), p=self.kind_probs))]
      if kind == "scratch":
        masks.scratch(mask, rng, max(1.0, uniform(rng, self.scratch_width) * side), budget)
      elif kind == "blotch":
        masks.blotch(mask, rng, uniform(rng, self.blotch_radius) * side, budget)
      elif kind == "hole":
        masks.hole(mask, rng, self.hole_size, budget)
      else:
        masks.stroke(mask, rng, max(1.0, uniform(rng, self.stroke_width) * side), budget)
      covered = int(np.count_nonzero(mask))
    return mask

  def _filled(self, img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    if self.fill == "constant":
      out[mask] = np.float32(self.fill_value)
    else:
      out[mask] = rng.random((int(np.count_nonzero(mask)), img.shape[2]), dtype=np.float32)
    return out

  def apply_masked(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = self.draw_mask(img.shape[:2], rng)
    return self._filled(img, mask, rng), mask[:, :, None].astype(np.float32)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return self.apply_masked(img, rng)[0]

  def find_mask(self, photo: np.ndarray) -> np.ndarray:
    """Pixels equal to the fill value in every channel (pure white by default; white for noise fill)."""
    value = np.float32(self.fill_value if self.fill == "constant" else 1.0)
    return np.all(photo == value, axis=-1)

  def prepare(self, photo: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The photo with its missing pixels filled as in training, and the mask: given, or found as pure white.

    Args:
      photo: HWC float32 RGB in [0, 1].
      mask: optional (h, w) or (h, w, 1) array, nonzero (> 0.5) where pixels are missing.
    """
    photo = as_image(photo, "photo")
    if mask is None:
      missing = self.find_mask(photo)
    else:
      mask = np.asarray(mask)
      if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
      if mask.shape != photo.shape[:2]:
        raise ValueError(f"The mask's shape {mask.shape} does not match the photo's {photo.shape[:2]}.")
      missing = mask > 0.5
    filled = self._filled(photo, missing, np.random.default_rng(0))
    return {"input": filled, "mask": missing[:, :, None].astype(np.float32)}
