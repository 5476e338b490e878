"""End to end: the `tiny` recipe through the real command line, then a resume from its checkpoint."""

import hashlib
import json
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from cli import REPO, read_events as _events, read_state, train
from configs import sr_wgangp
from restore_jax import evaluate, train as train_lib


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The tiny recipe run the way a user types it: from their own directory, with a relative --workdir."""
  here = tmp_path_factory.mktemp("user")
  # Periodic evaluation also scores NIQE and LPIPS, and keeps the best checkpoint by NIQE (lower is better).
  # PYTHONPATH: this checkout's restore_jax, as if installed, whatever other copy the environment has.
  first = train(Path("tiny"), "--config.eval.metrics=psnr,ssim,niqe,lpips", "--config.eval.best_metric=niqe",
                config=str(REPO / "configs" / "sr_wgangp.py") + ":tiny", cwd=here, PYTHONPATH=str(REPO))
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


def test_periodic_evaluation_logs_what_the_evaluate_command_prints(run):
  """The eval/psnr_y a run logs at step 4 is the figure `restore_jax.evaluate` gives for that checkpoint."""
  workdir, _ = run
  scalars, _ = _events(workdir)
  report = evaluate.run(types.SimpleNamespace(
      workdir=str(workdir), baseline=None, config=None, data=None, output=None, no_ema=False, step="4",
      tensorboard=False, crop_border=None, seed=None, ms_ssim=False, max_images=0, tile=None, tile_overlap=None))
  assert report["step"] == 4
  for metric in evaluate.METRICS:
    logged = dict(scalars[f"eval/{metric}"])[4]
    assert logged == pytest.approx(report["mean"][metric], rel=1e-6, abs=1e-6), metric


def test_periodic_evaluation_logs_the_chosen_perceptual_metrics(run):
  workdir, first = run
  scalars, _ = _events(workdir)
  niqe = dict(scalars["eval/niqe"])
  assert 4 in niqe and all(v > 0 for v in niqe.values())
  if "eval/lpips" not in scalars:  # Without LPIPS weights the metric is left out with a warning, not a crash.
    assert "lpips left out" in first.stderr
  else:
    assert 0 < scalars["eval/lpips"][0][1] < 1
  # Before the `rerun` fixture resumes the run (with the recipe's own metrics), DIR/best holds step 4, by NIQE.
  kept = json.loads((workdir / "best" / "4" / "metrics" / "metrics").read_text())
  assert kept["niqe"] == pytest.approx(niqe[4], rel=1e-5)


def test_config_json_records_the_sample_photos_and_their_hashes(run):
  """data.source = "samples" depends on the installed packages: config.json lists the files it found."""
  workdir, _ = run
  recorded = json.loads((workdir / "config.json").read_text())["sample_files"]
  import skimage  # pylint: disable=g-import-not-at-top

  site = Path(skimage.__file__).parents[1]
  assert "skimage/data/astronaut.png" in recorded and len(recorded) >= 3
  for name, digest in recorded.items():
    assert digest == hashlib.sha256((site / name).read_bytes()).hexdigest(), name


@pytest.fixture(scope="module")
def rerun(run):
  """The run continued to step 6, after damaging its best checkpoint and editing its record of sample photos."""
  workdir, _ = run
  (workdir / "best" / "4" / "metrics" / "metrics").write_text("{ not json")
  record = json.loads((workdir / "config.json").read_text())
  files = record.setdefault("sample_files", {})
  files["skimage/data/retired_photo.png"] = "0" * 64  # A photo the packages no longer ship ...
  files["skimage/data/astronaut.png"] = "f" * 64  # ... and one whose bytes changed.
  (workdir / "config.json").write_text(json.dumps(record))
  return workdir, train(workdir, "--config.total_steps=6")


def test_rerun_resumes_from_checkpoint(rerun):
  workdir, again = rerun
  assert "Resumed from the checkpoint of step 4" in again.stderr
  scalars, _ = _events(workdir)
  assert [s for s, _ in scalars["g_loss"]] == [2, 4, 6]
  assert [s for s, _ in scalars["eval/psnr_y"]] == [4, 6]
  assert (workdir / "checkpoints" / "6").is_dir()


def test_rerun_sets_a_damaged_best_aside_and_keeps_a_new_one(rerun):
  workdir, again = rerun
  assert str(workdir / "best" / "4") in again.stderr
  assert list((workdir / "best_quarantine").glob("*/4"))
  assert sorted(p.name for p in (workdir / "best").iterdir() if p.name.isdigit()) == ["6"]


def test_rerun_warns_that_the_sample_photos_changed(rerun):
  _, again = rerun
  warning = again.stderr[again.stderr.index("sample photo"):]
  assert "skimage/data/retired_photo.png" in warning and "skimage/data/astronaut.png" in warning


class _Writer:
  """Collects what run_eval writes."""

  def __init__(self):
    self.scalars, self.images = {}, {}

  def write_scalars(self, step, scalars):
    self.scalars.update(scalars)

  def write_images(self, step, images):
    self.images.update(images)


def test_periodic_evaluation_restores_in_tiles_of_eval_tile(tmp_path):
  """Large validation images go through the generator tile by tile (eval.tile input pixels), so the device
  never holds more than a tile; eval.tile = 0 restores them whole."""
  rng = np.random.default_rng(0)
  clean = rng.random((160, 200, 3), dtype=np.float32)
  pairs = [evaluate.Pair("photo", clean[::4, ::4].copy(), clean)]
  shapes = []

  def apply_generator(variables, x):
    shapes.append(x.shape)
    return np.repeat(np.repeat(np.asarray(x), 4, axis=1), 4, axis=2)

  state = types.SimpleNamespace(ema_variables={}, generator=types.SimpleNamespace(variables={}))
  config = sr_wgangp.get_config("tiny")
  config.eval.tile, config.eval.tile_overlap = 16, 4
  tiled = train_lib.run_eval(config, apply_generator, state, pairs, _Writer(), 4)
  assert shapes and all(shape[1:3] == (16, 16) for shape in shapes), shapes
  shapes.clear()
  config.eval.tile = 0
  whole = train_lib.run_eval(config, apply_generator, state, pairs, _Writer(), 4)
  assert set(shapes) == {(1, 40, 50, 3)}
  assert tiled["mean"]["psnr_y"] == pytest.approx(whole["mean"]["psnr_y"], abs=1e-6)  # Nearest x4 has no seams.
  config.eval.tile = -1
  with pytest.raises(ValueError, match="eval.tile"):
    train_lib.run_eval(config, apply_generator, state, pairs, _Writer(), 4)


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


def test_perceptual_term_changes_the_generator_update(run, tmp_path):
  """A VGG19 .npz (random weights, written here) switches the perceptual term on: it is logged, and the run's
  generator differs from the same run with the term's weight at 0 (the `run` fixture), on the same batches."""
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
  train(workdir, "--config.loss.terms.perceptual=0.01", f"--config.loss.perceptual.weights={weights}")
  scalars, _ = _events(workdir)
  values = [v for _, v in scalars["g_perceptual"]]
  assert len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values)

  without, _ = run
  scalars_without, _ = _events(without)
  # The same batches (the fixture's run went on to step 6 since) ...
  baseline, baseline_without = dict(scalars["psnr_baseline"]), dict(scalars_without["psnr_baseline"])
  assert sorted(baseline) == [2, 4]
  assert all(baseline[step] == pytest.approx(baseline_without[step], rel=1e-6) for step in baseline)
  with_term, without_term = read_state(workdir, 4), read_state(without, 4)
  differs = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(with_term["generator"]["params"]),
                                                        jax.tree.leaves(without_term["generator"]["params"]))]
  assert all(differs), "every generator array should take the perceptual term's gradient"  # ... other updates.
