"""The pix2pix recipes (configs/inpaint_pix2pix.py, configs/colorize_pix2pix.py) at their `tiny` size: trained
through the command line for 2 steps and resumed to 4, then evaluated and restored in-process.

Inpainting: restore takes the mask from --mask, or finds it as pure-white or transparent pixels; all three give
the same restoration. Colorization: a gray PNG in gives an RGB PNG out; L1 alone before the adversarial phase.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import read_events
from recipe_checks import eval_args, psnr, recipe_config, train_and_resume
from restore_jax import evaluate, restore

INPAINT = "configs/inpaint_pix2pix.py:tiny"
COLORIZE = "configs/colorize_pix2pix.py:tiny"


def _photo(shape, seed: int) -> np.ndarray:
  """A smooth random colour image (uint8): structure a photo has, at test size."""
  rng = np.random.default_rng(seed)
  small = rng.random((4, 4, 3))
  big = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize(shape[::-1], Image.BICUBIC))
  return np.clip(big.astype(np.float64) + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory) -> Path:
  folder = tmp_path_factory.mktemp("clean")
  Image.fromarray(_photo((40, 48), 0)).save(folder / "smooth.png")
  return folder


# ------------------------------------------------------------------------------------------------ Inpainting


@pytest.fixture(scope="module")
def inpaint_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("inpaint") / "run"
  first, again = train_and_resume(workdir, INPAINT)
  return workdir, first, again


def test_inpaint_trains_and_resumes_at_step_2(inpaint_run):
  workdir, first, again = inpaint_run
  assert "Resumed" not in first.stderr
  assert "Resumed from the checkpoint of step 2" in again.stderr
  scalars, _ = read_events(workdir)
  assert [s for s, _ in scalars["g_l1"]] == [2, 4]
  # The logged loss is L1 x 200 (pix2pix's 100, on [0, 1] images) + the vanilla GAN term (weight 1), both phases
  # on from the start.
  for step in (2, 4):
    at = {tag: dict(scalars[tag])[step] for tag in ("g_loss", "g_l1", "g_adversarial")}
    assert at["g_loss"] == pytest.approx(200 * at["g_l1"] + at["g_adversarial"], rel=1e-5)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]


def test_inpaint_identity_baseline_is_the_photo_with_white_holes(inpaint_run, clean_folder):
  report = evaluate.run(eval_args(baseline="identity", config=recipe_config(INPAINT), data=f"folder:{clean_folder}"))
  assert report["baseline"] == "identity" and report["scale"] == 1 and report["crop_border"] == 0
  # The damaged input, rebuilt from the mask alone: the clean photo with the masked pixels white.
  pairs = evaluate.load_pairs(f"folder:{clean_folder}", recipe_config(INPAINT), seed=report["seed"])
  clean, mask = pairs[0].clean, pairs[0].mask[..., 0] > 0.5
  assert 0.02 < mask.mean() < 0.4  # The damage's coverage range, 5 to 25%, give or take the stopping rule.
  expected = np.where(mask[..., None], 1.0, clean)
  assert report["mean"]["psnr_rgb"] == pytest.approx(psnr(expected, clean), abs=1e-3)


def test_inpaint_evaluates_the_run(inpaint_run, clean_folder):
  workdir, _, _ = inpaint_run
  report = evaluate.run(eval_args(workdir=str(workdir), data=f"folder:{clean_folder}"))
  assert report["step"] == 4 and report["ema"] is True
  assert [image["name"] for image in report["images"]] == ["smooth.png"]
  assert all(np.isfinite(report["mean"][k]) for k in ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y"))


@pytest.fixture(scope="module")
def inpaint_restored(inpaint_run, tmp_path_factory):
  """One photo with a hole, restored three ways: the hole given by --mask, painted white, or transparent."""
  workdir, _, _ = inpaint_run
  folder = tmp_path_factory.mktemp("restore_inpaint")
  photo = _photo((37, 50), 1)
  hole = np.zeros(photo.shape[:2], bool)
  hole[10:20, 15:30] = True
  hole[25:27, :] = True  # A scratch across the photo.
  photo[hole] = [200, 30, 90]  # Whatever the damage looks like: only the mask says it is missing.
  Image.fromarray(photo).save(folder / "photo.png")
  Image.fromarray((hole * 255).astype(np.uint8)).save(folder / "mask.png")
  white = photo.copy()
  white[hole] = 255
  Image.fromarray(white).save(folder / "white.png")
  Image.fromarray(np.dstack([photo, np.where(hole, 0, 255).astype(np.uint8)])).save(folder / "alpha.png")

  outputs = {}
  for name, extra in (("mask", ["--input", str(folder / "photo.png"), "--mask", str(folder / "mask.png")]),
                      ("white", ["--input", str(folder / "white.png")]),
                      ("alpha", ["--input", str(folder / "alpha.png")]),
                      ("none", ["--input", str(folder / "photo.png")])):
    out = folder / f"restored_{name}.png"
    assert restore.main(["--workdir", str(workdir), "--output", str(out), "--tile", "0", *extra]) == 0
    with Image.open(out) as image:
      outputs[name] = (image.mode, np.asarray(image))
  return outputs, hole


def test_inpaint_restore_takes_the_mask_from_a_file_or_finds_it(inpaint_restored):
  outputs, hole = inpaint_restored
  for name in ("mask", "white", "alpha"):
    mode, pixels = outputs[name]
    assert mode == "RGB" and pixels.shape == (37, 50, 3), name  # Filled pixels are opaque: no alpha back.
  # The same generator input whichever way the hole was marked: the same restoration.
  np.testing.assert_array_equal(outputs["white"][1], outputs["mask"][1])
  np.testing.assert_array_equal(outputs["alpha"][1], outputs["mask"][1])
  # Without a mask nothing is missing (no pure-white pixels): the model sees another input.
  assert np.abs(outputs["none"][1].astype(int) - outputs["mask"][1]).max() > 0


# ------------------------------------------------------------------------------------------------ Colorization


@pytest.fixture(scope="module")
def colorize_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("colorize") / "run"
  first, again = train_and_resume(workdir, COLORIZE)
  return workdir, first, again


def test_colorize_warms_up_with_l1_alone_then_adds_the_gan(colorize_run):
  workdir, _, again = colorize_run
  assert "Resumed from the checkpoint of step 2" in again.stderr
  scalars, _ = read_events(workdir)
  at = {tag: dict(scalars[tag]) for tag in ("g_loss", "g_l1", "g_adversarial", "adversarial_on")}
  # Steps 1-2 (the first run): L1 x 200 alone. Steps 3-4 (the resumed run): L1 x 200 + the GAN term.
  assert at["adversarial_on"][2] == 0 and at["adversarial_on"][4] == 1
  assert at["g_loss"][2] == pytest.approx(200 * at["g_l1"][2], rel=1e-5)
  assert at["g_loss"][4] == pytest.approx(200 * at["g_l1"][4] + at["g_adversarial"][4], rel=1e-5)


def test_colorize_identity_baseline_is_the_gray_photo(colorize_run, clean_folder):
  report = evaluate.run(eval_args(baseline="identity", config=recipe_config(COLORIZE), data=f"folder:{clean_folder}"))
  assert report["baseline"] == "identity" and report["scale"] == 1
  with Image.open(clean_folder / "smooth.png") as image:
    clean = np.asarray(image, np.float64) / 255
  # BT.601 luma, rounded to 8 bits as a saved gray image is, on all three channels.
  luma = np.round((clean @ np.array([0.299, 0.587, 0.114])) * 255) / 255
  assert report["mean"]["psnr_rgb"] == pytest.approx(psnr(np.repeat(luma[..., None], 3, -1), clean), abs=1e-3)

  workdir, _, _ = colorize_run
  model = evaluate.run(eval_args(workdir=str(workdir), data=f"folder:{clean_folder}"))
  assert model["step"] == 4 and np.isfinite(model["mean"]["psnr_rgb"])


def test_colorize_restore_turns_gray_and_colour_photos_into_colour(colorize_run, tmp_path):
  workdir, _, _ = colorize_run
  photo = _photo((37, 50), 2)
  Image.fromarray(photo).save(tmp_path / "colour.png")
  gray = Image.fromarray(photo).convert("L")  # Pillow's BT.601 luma, 8 bits.
  gray.save(tmp_path / "gray.png")
  outputs = {}
  for name in ("gray", "colour"):
    out = tmp_path / f"restored_{name}.png"
    assert restore.main(["--workdir", str(workdir), "--input", str(tmp_path / f"{name}.png"), "--output",
                         str(out), "--tile", "0"]) == 0
    with Image.open(out) as image:
      assert image.mode == "RGB" and image.size == (50, 37), name
      outputs[name] = np.asarray(image).astype(int)
  # A colour photo is coloured from its luma: the same as its gray version, up to the gray file's 8-bit rounding.
  assert np.abs(outputs["gray"] - outputs["colour"]).max() <= 3
