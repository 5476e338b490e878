"""A new task added from outside the package (tests/tasks/box_blur.py: a config and a degradation in one file),
trained, resumed, evaluated and restored through the real command lines.

It is a conditional U-Net + PatchGAN pix2pix-style run with batch norm in both networks, L1 + MS-SSIM + cosine +
the vanilla GAN objective and mismatched pairs: every part of the step a same-size restoration task uses.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import REPO, assert_trees_equal, cli_env, read_events, read_state, train

CONFIG = "tests/tasks/box_blur.py"
TASKS = str(REPO / "tests" / "tasks")


def _env(**extra):
  return cli_env(2, PYTHONPATH=os.pathsep.join([TASKS, str(REPO)]), **extra)


def _train(workdir: Path, *extra: str):
  return train(workdir, *extra, config=CONFIG, PYTHONPATH=os.pathsep.join([TASKS, str(REPO)]))


def _box_blur(image: np.ndarray) -> np.ndarray:
  """The task's damage written again here: the mean of each pixel's 2x2 block, edges repeated."""
  padded = np.concatenate([image, image[-1:]], axis=0)
  padded = np.concatenate([padded, padded[:, -1:]], axis=1)
  return (padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]) / 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("box_blur")
  whole = _train(root / "whole")
  _train(root / "halves", "--config.total_steps=2")
  again = _train(root / "halves")
  return root, whole, again


def test_every_term_is_logged(runs):
  root, _, _ = runs
  scalars, images = read_events(root / "whole")
  for tag in ("g_loss", "g_l1", "g_ms_ssim", "g_cosine", "g_adversarial", "g_grad_norm", "d_loss", "d_adversarial",
              "d_mismatch", "d_real_score", "d_fake_score", "d_grad_norm", "psnr", "psnr_baseline", "lr_g", "lr_d",
              "eval/psnr_rgb", "eval/ssim_y"):
    assert tag in scalars, f"missing {tag}; have {sorted(scalars)}"
    assert all(np.isfinite(v) for _, v in scalars[tag]), tag
  assert [s for s, _ in scalars["g_ms_ssim"]] == [1, 2, 3, 4]
  assert "d_mismatch" in scalars and "gradient_penalty" not in scalars  # No penalty asked for, none computed.
  assert "input_output_target" in images
  # The logged loss is the weighted sum of the logged terms (the adversarial weight is 0.01).
  at = {tag: dict(scalars[tag]) for tag in ("g_loss", "g_l1", "g_ms_ssim", "g_cosine", "g_adversarial")}
  for step in (1, 4):
    total = at["g_l1"][step] + 0.84 * at["g_ms_ssim"][step] + 0.5 * at["g_cosine"][step]
    assert at["g_loss"][step] == pytest.approx(total + 0.01 * at["g_adversarial"][step], rel=1e-5)


def test_resume_with_batch_norm_is_bit_identical(runs):
  root, _, again = runs
  assert "Resumed from the checkpoint of step 2" in again.stderr
  whole, halves = read_state(root / "whole", 4), read_state(root / "halves", 4)
  assert whole["generator"]["batch_stats"] and whole["discriminator"]["batch_stats"]
  assert_trees_equal(whole, halves)


def test_evaluate_scores_the_task_against_its_own_baseline(runs, tmp_path):
  root, _, _ = runs
  folder = tmp_path / "photos"
  folder.mkdir()
  rng = np.random.default_rng(0)
  clean = (rng.random((40, 36, 3)) * 255).round().astype(np.uint8)
  Image.fromarray(clean).save(folder / "noise.png")
  report_path = tmp_path / "identity.json"
  cmd = [sys.executable, "-m", "restore_jax.evaluate", "--baseline", "identity", "--config", CONFIG,
         "--data", f"folder:{folder}", "--output", str(report_path)]
  proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(report_path.read_text())
  assert report["crop_border"] == 0 and report["scale"] == 1
  # The identity baseline of this task is the blurred image itself, rounded to 8 bits: PSNR by hand.
  blurred = np.round(np.clip(_box_blur(clean / 255.0), 0, 1) * 255)
  expected = 10 * np.log10(255**2 / np.mean((blurred - clean) ** 2))
  assert report["mean"]["psnr_rgb"] == pytest.approx(expected, abs=1e-3)

  cmd = [sys.executable, "-m", "restore_jax.evaluate", "--workdir", str(root / "whole"), "--data", f"folder:{folder}"]
  proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "noise.png" in proc.stdout and "mean of 1" in proc.stdout


def test_restore_keeps_the_size_of_any_photo(runs, tmp_path):
  root, _, _ = runs
  photo = tmp_path / "photo.png"
  Image.fromarray((np.random.default_rng(1).random((37, 50, 3)) * 255).astype(np.uint8)).save(photo)
  out = tmp_path / "restored.png"
  cmd = [sys.executable, "-m", "restore_jax.restore", "--workdir", str(root / "whole"), "--input", str(photo),
         "--output", str(out), "--tile", "32", "--tile-overlap", "8"]
  proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with Image.open(out) as restored:
    assert restored.size == (50, 37) and restored.mode == "RGB"
