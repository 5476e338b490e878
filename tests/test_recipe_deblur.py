"""The deblurring recipe (configs/deblur_translator.py) at its `tiny` size: trained through the command line for 2
steps of L2 alone and resumed to 4 with the GAN joined, then evaluated and restored in-process.

Checked: L2 x 100 alone before loss.adversarial_start_step and with the vanilla GAN term after it, the fixed
Gaussian blur against scipy's Gaussian filter, every blur of the mix smoothing the photo, and the identity baseline.
"""

import ml_collections
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from cli import read_events
from recipe_checks import clean_folder, eval_args, photo, psnr, recipe_config, train_and_resume
from restore_jax import evaluate, restore

DEBLUR = "configs/deblur_translator.py:tiny"


@pytest.fixture(scope="module")
def deblur_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("deblur") / "run"
  first, again = train_and_resume(workdir, DEBLUR)
  return workdir, first, again


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  return clean_folder(tmp_path_factory.mktemp("clean"), count=2)


def test_deblur_trains_with_l2_then_adds_the_gan(deblur_run):
  workdir, first, again = deblur_run
  assert "Resumed" not in first.stderr
  assert "Resumed from the checkpoint of step 2" in again.stderr
  scalars, _ = read_events(workdir)
  at = {tag: dict(scalars[tag]) for tag in ("g_loss", "g_mse", "g_adversarial", "adversarial_on")}
  # Steps 1-2 (the first run): L2 x 100 alone. Steps 3-4 (the resumed run): L2 x 100 + the GAN term.
  assert at["adversarial_on"][2] == 0 and at["adversarial_on"][4] == 1
  assert at["g_loss"][2] == pytest.approx(100 * at["g_mse"][2], rel=1e-5)
  assert at["g_loss"][4] == pytest.approx(100 * at["g_mse"][4] + at["g_adversarial"][4], rel=1e-5)


def _only(step: str) -> ml_collections.ConfigDict:
  """The recipe with its one_of forced to `step`."""
  config = recipe_config(DEBLUR)
  config.degradation.weights = tuple(1.0 if s == step else 0.0 for s in config.degradation.steps)
  return config


def _detail(image: np.ndarray) -> float:
  """Mean squared Laplacian of each channel: the fine detail blur removes."""
  return float(np.mean([scipy.ndimage.laplace(image[..., c], mode="reflect") ** 2 for c in range(3)]))


def test_deblur_fixed_gaussian_is_scipys_gaussian_filter(photos):
  pairs = evaluate.load_pairs(f"folder:{photos}", _only("gaussian"), seed=0)
  for pair in pairs:
    # sigma 2 with the kernel cut at 3 sigma; compared away from the borders, whose padding may differ.
    expected = scipy.ndimage.gaussian_filter(pair.clean.astype(np.float64), sigma=(2, 2, 0), truncate=3.0)
    np.testing.assert_allclose(pair.degraded[6:-6, 6:-6], expected[6:-6, 6:-6], atol=1 / 255)


@pytest.mark.parametrize("step", ["gaussian", "random_gaussian", "resize"])
def test_deblur_every_blur_of_the_mix_removes_detail(photos, step):
  for pair in evaluate.load_pairs(f"folder:{photos}", _only(step), seed=0):
    # Under three quarters: a nearest-neighbour upscale of the resize blur keeps the edges of its blocks.
    assert _detail(pair.degraded) < 0.75 * _detail(pair.clean)


def test_deblur_identity_baseline_is_the_blurred_photo(photos):
  config = recipe_config(DEBLUR)
  assert config.task.baseline == "identity"
  report = evaluate.run(eval_args(baseline="identity", config=config, data=f"folder:{photos}"))
  pairs = evaluate.load_pairs(f"folder:{photos}", config, seed=report["seed"])
  assert report["mean"]["psnr_rgb"] == pytest.approx(np.mean([psnr(p.degraded, p.clean) for p in pairs]), abs=1e-3)


def test_deblur_evaluates_and_restores_the_run(deblur_run, photos, tmp_path):
  workdir, _, _ = deblur_run
  report = evaluate.run(eval_args(workdir=str(workdir), data=f"folder:{photos}"))
  assert report["step"] == 4
  assert all(np.isfinite(report["mean"][k]) for k in ("psnr_rgb", "ssim_rgb"))
  # The translator halves the image num_downs times: a size that is no multiple of 4 must still come back whole.
  Image.fromarray(photo((37, 50), 3)).save(tmp_path / "blurred.png")
  out = tmp_path / "restored.png"
  assert restore.main(["--workdir", str(workdir), "--input", str(tmp_path / "blurred.png"), "--output", str(out),
                       "--tile", "0"]) == 0
  with Image.open(out) as image:
    assert image.mode == "RGB" and image.size == (50, 37)
