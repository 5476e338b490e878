"""End to end: the `tiny` recipe through the real command line, then a resume from its checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest

from cli import REPO, read_events as _events, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The tiny recipe run the way a user types it: from their own directory, with a relative --workdir."""
  here = tmp_path_factory.mktemp("user")
  # Periodic evaluation also scores NIQE and LPIPS, and keeps the best checkpoint by NIQE (lower is better).
  first = train(Path("tiny"), "--config.eval.metrics=psnr,ssim,niqe,lpips", "--config.eval.best_metric=niqe",
                config=str(REPO / "configs" / "sr_wgangp.py") + ":tiny", cwd=here)
  return here / "tiny", first


def test_tiny_run_writes_config_events_and_checkpoint(run):
  workdir, _ = run
  config = json.loads((workdir / "config.json").read_text())
  assert config["recipe"] == "sr_wgangp" and config["variant"] == "tiny" and config["total_steps"] == 4
  scalars, images = _events(workdir)
  for tag in ("g_loss", "g_mse", "g_adversarial", "d_loss", "gradient_penalty", "wasserstein", "g_grad_norm",
              "d_grad_norm", "psnr", "psnr_baseline", "lr_g", "lr_d", "steps_per_sec", "data/skipped"):
    assert tag in scalars, f"missing scalar {tag}; have {sorted(scalars)}"
  assert [s for s, _ in scalars["g_loss"]] == [2, 4]
  assert all(np.isfinite(v) for _, v in scalars["g_loss"])
  assert "input_output_target" in images
  assert (workdir / "checkpoints" / "4").is_dir()


def test_tiny_run_evaluates_the_held_out_photo_and_keeps_the_best(run):
  """eval.holdout = 1 in the tiny recipe: one sample photo is kept out of training and scored whole."""
  workdir, _ = run
  scalars, images = _events(workdir)
  for tag in ("eval/psnr_rgb", "eval/psnr_y", "eval/ssim_rgb", "eval/ssim_y"):
    assert [s for s, _ in scalars[tag]] == [4], tag
  psnr_y, ssim_y = scalars["eval/psnr_y"][0][1], scalars["eval/ssim_y"][0][1]
  assert 5 < psnr_y < 60 and 0 < ssim_y <= 1
  assert any(tag.startswith("eval/") for tag in images)
  assert (workdir / "best" / "4").is_dir()


def test_rerun_resumes_from_checkpoint(run):
  workdir, _ = run
  again = train(workdir, "--config.total_steps=6")
  assert "Resumed from the checkpoint of step 4" in again.stderr
  scalars, _ = _events(workdir)
  assert [s for s, _ in scalars["g_loss"]] == [2, 4, 6]
  assert [s for s, _ in scalars["eval/psnr_y"]] == [4, 6]
  assert (workdir / "checkpoints" / "6").is_dir()


def test_full_recipe_without_vgg19_weights_stops_before_training(tmp_path):
  """Nothing can be downloaded: with no weights anywhere, the full recipe says where to put them and exits."""
  home = tmp_path / "home"
  proc = train(tmp_path / "run", config="configs/sr_wgangp.py", check=False, HOME=str(home),
                XDG_CACHE_HOME=str(home / ".cache"), TORCH_HOME=str(home / "torch"), KERAS_HOME=str(home / "keras"))
  assert proc.returncode != 0
  assert "No VGG19 weights found" in proc.stderr
  assert str(home / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in proc.stderr
  assert "--config.loss.perceptual.weights" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_perceptual_term_trains_with_weights_from_a_file(tmp_path):
  """A VGG19 .npz (random weights, written here) switches the perceptual term on and it is logged."""
  from restore_jax.models import vgg19

  rng = np.random.default_rng(0)
  arrays = {}
  for name, (kernel_shape, bias_shape) in vgg19.conv_shapes().items():
    fan_in = np.prod(kernel_shape[:3])
    arrays[f"{name}/kernel"] = (rng.standard_normal(kernel_shape) * np.sqrt(2 / fan_in)).astype(np.float32)
    arrays[f"{name}/bias"] = np.zeros(bias_shape, np.float32)
  weights = tmp_path / "vgg19.npz"
  np.savez(weights, **arrays)
  workdir = tmp_path / "run"
  train(workdir, "--config.total_steps=2", "--config.log_every=1", "--config.loss.terms.perceptual=0.01",
         f"--config.loss.perceptual.weights={weights}")
  scalars, _ = _events(workdir)
  assert "g_perceptual" in scalars
  values = [v for _, v in scalars["g_perceptual"]]
  assert len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values)


def test_periodic_evaluation_logs_the_chosen_perceptual_metrics(run):
  workdir, first = run
  scalars, _ = _events(workdir)
  assert [s for s, _ in scalars["eval/niqe"]] == [4] and scalars["eval/niqe"][0][1] > 0
  if "eval/lpips" not in scalars:  # Without LPIPS weights the metric is left out with a warning, not a crash.
    assert "lpips left out" in first.stderr
  else:
    assert 0 < scalars["eval/lpips"][0][1] < 1
  kept = json.loads((workdir / "best" / "4" / "metrics" / "metrics").read_text())  # What DIR/best scored.
  assert kept["niqe"] == pytest.approx(scalars["eval/niqe"][0][1], rel=1e-5)
