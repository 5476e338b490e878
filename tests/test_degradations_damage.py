"""Damage masks: coverage, fill, untouched pixels, and the shapes of each kind."""

import numpy as np
import pytest
import scipy.ndimage
import skimage.data

from restore_jax.degradations import make_degradation

KINDS = ("scratch", "blotch", "hole", "free_form")


def _only(kind: str | None, **options) -> dict:
  """A damage config drawing one kind of shape (all kinds for None)."""
  weights = {f"{k}_weight": float(kind is None or k == kind) for k in KINDS}
  return dict(name="damage", **weights, **options)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
  return skimage.data.chelsea()[:128, 100:228].astype(np.float32) / 255.0


@pytest.mark.parametrize("kind", KINDS + (None,))
@pytest.mark.parametrize("coverage", [0.03, 0.2])
def test_mask_covers_the_configured_fraction(photo, kind, coverage):
  degrade = make_degradation(_only(kind, coverage=coverage))
  for seed in range(3):
    out = degrade(photo, np.random.default_rng(seed))
    mask = out["mask"][..., 0].astype(bool)
    assert set(np.unique(out["mask"])) <= {0.0, 1.0}
    # Shapes are added until the coverage is within 0.2% of the image of its aim; the last shape is sized to
    # what is left, so it overshoots by little: within 0.5% of the image either way.
    assert abs(mask.mean() - coverage) < 0.005
    # Masked pixels hold the fill (white), the others are untouched, bit for bit.
    assert (out["input"][mask] == 1.0).all()
    np.testing.assert_array_equal(out["input"][~mask], photo[~mask])


def test_coverage_is_drawn_per_sample_from_its_range(photo):
  degrade = make_degradation(dict(name="damage", coverage=(0.05, 0.3)))
  coverages = [degrade(photo, np.random.default_rng(s))["mask"].mean() for s in range(12)]
  assert min(coverages) > 0.05 - 0.005 and max(coverages) < 0.3 + 0.005
  assert max(coverages) - min(coverages) > 0.1
  empty = make_degradation(dict(name="damage", coverage=0.0))(photo, np.random.default_rng(0))
  assert empty["mask"].max() == 0 and np.array_equal(empty["input"], photo)


def test_other_fills(photo):
  black = make_degradation(dict(name="damage", fill_value=0.0, coverage=0.1))(photo, np.random.default_rng(0))
  mask = black["mask"][..., 0].astype(bool)
  assert (black["input"][mask] == 0.0).all()
  np.testing.assert_array_equal(black["input"][~mask], photo[~mask])
  noisy = make_degradation(dict(name="damage", fill="noise", coverage=0.1))(photo, np.random.default_rng(0))
  mask = noisy["mask"][..., 0].astype(bool)
  values = noisy["input"][mask]
  # Uniform noise: mean 1/2, variance 1/12, within 4 standard errors.
  assert abs(values.mean() - 0.5) < 4 * np.sqrt(1 / 12 / values.size)
  assert abs(values.var() - 1 / 12) < 4 * np.sqrt(1 / 180 / values.size)  # Var of U^2-terms: 1/180.
  np.testing.assert_array_equal(noisy["input"][~mask], photo[~mask])


def test_shapes_look_like_their_kind(photo):
  def mask_of(kind, **options):
    out = make_degradation(_only(kind, coverage=0.08, **options))(photo, np.random.default_rng(4))
    return out["mask"][..., 0].astype(bool)

  # Scratches are thin: an opening with a 3 x 3 square removes nearly all of them; holes survive it.
  scratches = mask_of("scratch", scratch_width=(0.008, 0.008))  # 1 px wide at 128 px.
  assert scipy.ndimage.binary_opening(scratches, np.ones((3, 3))).sum() < 0.05 * scratches.sum()
  holes = mask_of("hole")
  assert scipy.ndimage.binary_opening(holes, np.ones((3, 3))).sum() > 0.9 * holes.sum()
  # Holes are rectangles (or unions of overlapping ones): components fill most of their bounding box.
  labels, count = scipy.ndimage.label(holes)
  for box, index in zip(scipy.ndimage.find_objects(labels), range(1, count + 1)):
    assert (labels[box] == index).mean() > 0.5
  # Blotches are filled: no enclosed gaps.
  blotches = mask_of("blotch")
  assert (scipy.ndimage.binary_fill_holes(blotches) == blotches).mean() > 0.999
  # Free-form strokes are wide: they survive an opening, unlike scratches.
  strokes = mask_of("free_form")
  assert scipy.ndimage.binary_opening(strokes, np.ones((3, 3))).sum() > 0.5 * strokes.sum()


def test_weights_choose_the_kinds(photo):
  with pytest.raises(ValueError, match="must be > 0"):
    make_degradation(dict(name="damage", scratch_weight=0.0, blotch_weight=0.0, hole_weight=0.0,
                          free_form_weight=0.0))
  with pytest.raises(ValueError, match="degradation.hole_weight must be >= 0, got -1"):
    make_degradation(dict(name="damage", hole_weight=-1))
