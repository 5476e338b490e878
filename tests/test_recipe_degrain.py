"""The grain-removal recipe (configs/degrain_patchgan.py) at its `tiny` size: trained through the command line at
the high preset for 2 steps and resumed to 4, then evaluated and restored in-process.

Checked: the loss is 0.16 L1 + 0.84 MS-SSIM + 0.5 cosine + 0.01 vanilla GAN, the discriminator sees mismatched
pairs and learns at a quarter of the generator's rate, `--config.degradation.preset=high` reaches the run, the
median baseline is scipy's 3 x 3 median filter of the shuffled photo.
"""

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from cli import read_events
from recipe_checks import clean_folder, eval_args, photo, psnr, recipe_config, train_and_resume
from restore_jax import evaluate, inference, restore

DEGRAIN = "configs/degrain_patchgan.py:tiny"
HIGH = "--config.degradation.preset=high"


@pytest.fixture(scope="module")
def degrain_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("degrain") / "run"
  first, again = train_and_resume(workdir, DEGRAIN, HIGH)
  return workdir, first, again


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  return clean_folder(tmp_path_factory.mktemp("clean"), count=2)


def _moved_fraction(pairs) -> float:
  """The fraction of pixels whose colour the shuffle changed."""
  return float(np.mean([np.any(p.degraded != p.clean, axis=-1).mean() for p in pairs]))


def test_degrain_trains_and_resumes_with_its_loss_mix(degrain_run):
  workdir, first, again = degrain_run
  assert "Resumed" not in first.stderr
  assert "Resumed from the checkpoint of step 2" in again.stderr
  scalars, _ = read_events(workdir)
  assert [s for s, _ in scalars["g_l1"]] == [2, 4]
  for step in (2, 4):
    at = {tag: dict(scalars[tag])[step] for tag in ("g_loss", "g_l1", "g_ms_ssim", "g_cosine", "g_adversarial",
                                                    "d_mismatch", "lr_g", "lr_d", "adversarial_on")}
    assert at["adversarial_on"] == 1
    expected = 0.16 * at["g_l1"] + 0.84 * at["g_ms_ssim"] + 0.5 * at["g_cosine"] + 0.01 * at["g_adversarial"]
    assert at["g_loss"] == pytest.approx(expected, rel=1e-5)
    assert at["d_mismatch"] > 0  # Mismatched pairs reach the discriminator's loss.
    assert at["lr_g"] == pytest.approx(2e-4) and at["lr_d"] == pytest.approx(5e-5)


def test_degrain_preset_from_the_command_line_reaches_the_run(degrain_run, photos):
  workdir, _, _ = degrain_run
  config = inference.load_config(workdir)
  assert config.degradation.preset == "high"
  # High moves half the pixels, low (the default) a quarter; 2 x 1920 pixels pin each within a few percent.
  high = evaluate.load_pairs(f"folder:{photos}", config, seed=0)
  low = evaluate.load_pairs(f"folder:{photos}", recipe_config(DEGRAIN), seed=0)
  assert _moved_fraction(high) == pytest.approx(0.5, abs=0.04)
  assert _moved_fraction(low) == pytest.approx(0.25, abs=0.04)
  # No value is invented: every shuffled pixel is a clean pixel of its 5 x 5 neighbourhood.
  pair = high[0]
  padded = np.pad(pair.clean, ((2, 2), (2, 2), (0, 0)), mode="edge")
  height, width = pair.clean.shape[:2]
  found = np.zeros((height, width), bool)
  for dy in range(5):
    for dx in range(5):
      found |= np.all(padded[dy:dy + height, dx:dx + width] == pair.degraded, axis=-1)
  assert found.all()


def test_degrain_median_baseline_is_scipys_3x3_median(photos):
  config = recipe_config(DEGRAIN)
  report = evaluate.run(eval_args(baseline="median", config=config, data=f"folder:{photos}"))
  assert report["baseline"] == "median" and report["crop_border"] == 0
  pairs = evaluate.load_pairs(f"folder:{photos}", config, seed=report["seed"])
  expected = [psnr(scipy.ndimage.median_filter(p.degraded, size=(3, 3, 1), mode="reflect"), p.clean) for p in pairs]
  assert report["mean"]["psnr_rgb"] == pytest.approx(np.mean(expected), abs=1e-3)
  # On grain the median beats the shuffled photo itself.
  identity = evaluate.run(eval_args(baseline="identity", config=config, data=f"folder:{photos}"))
  assert report["mean"]["psnr_rgb"] > identity["mean"]["psnr_rgb"]


def test_degrain_evaluates_and_restores_the_run(degrain_run, photos, tmp_path):
  workdir, _, _ = degrain_run
  report = evaluate.run(eval_args(workdir=str(workdir), data=f"folder:{photos}"))
  assert report["step"] == 4
  assert all(np.isfinite(report["mean"][k]) for k in ("psnr_rgb", "ssim_rgb"))
  Image.fromarray(photo((37, 50), 3)).save(tmp_path / "grainy.png")
  out = tmp_path / "restored.png"
  assert restore.main(["--workdir", str(workdir), "--input", str(tmp_path / "grainy.png"), "--output", str(out),
                       "--tile", "0"]) == 0
  with Image.open(out) as image:
    assert image.mode == "RGB" and image.size == (50, 37)
