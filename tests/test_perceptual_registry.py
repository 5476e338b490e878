"""The metric registry evaluation reads: names, kinds, directions, options and their errors."""

import numpy as np
import pytest

from restore_jax import perceptual
from restore_jax.perceptual import niqe


def test_every_metric_says_how_to_run_and_read_it():
  assert set(perceptual.METRICS) == {"lpips", "lpips_vgg", "niqe", "fid"}
  for name, spec in perceptual.METRICS.items():
    assert spec.name == name
    assert spec.kind in perceptual.KINDS
    assert spec.higher_is_better is False  # Distances and NIQE: lower is better.
    assert "[0, 1]" in spec.input_range
  assert perceptual.METRICS["lpips"].kind == "per_image_pair"
  assert perceptual.METRICS["niqe"].kind == "per_image_no_reference"
  assert perceptual.METRICS["fid"].kind == "dataset"
  assert "crop_border" in perceptual.METRICS["niqe"].options()
  assert "crop_border" in perceptual.METRICS["lpips_vgg"].options()
  assert "net" not in perceptual.METRICS["lpips_vgg"].options()  # Fixed to VGG16.


def test_unknown_names_and_options_list_what_is_allowed():
  with pytest.raises(ValueError, match=r"Unknown perceptual metric 'brisque'.*'fid'.*'lpips'.*'niqe'"):
    perceptual.make_metric("brisque")
  with pytest.raises(ValueError, match=r"niqe: unknown option\(s\) \['border'\]; allowed: \['crop_border'"):
    perceptual.make_metric("niqe", border=4)


def test_the_niqe_factory_scores_one_image():
  rng = np.random.default_rng(0)
  image = rng.uniform(size=(100, 110, 3))
  score = perceptual.make_metric("niqe", crop_border=2)
  assert score(image) == niqe.niqe(image, crop_border=2)
