"""The denoising recipe (configs/denoise_unet.py) at its `tiny` size: trained through the command line for 2 steps
and resumed to 4, then evaluated and restored in-process.

Checked: the loss is L1 x 200 (pix2pix's 100, on [0, 1] images) + the vanilla GAN term (pix2pix), the noise is
Gaussian or Poisson as the statistics of the degraded photos show (residual variance constant for Gaussian noise,
proportional to the intensity over the peak for shot noise), and the recipe's median baseline beats the noisy photo.
"""

import ml_collections
import numpy as np
import pytest
from PIL import Image

from cli import read_events
from recipe_checks import clean_folder, eval_args, photo, recipe_config, train_and_resume
from restore_jax import evaluate, restore

DENOISE = "configs/denoise_unet.py:tiny"


@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("denoise") / "run"
  first, again = train_and_resume(workdir, DENOISE)
  return workdir, first, again


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  return clean_folder(tmp_path_factory.mktemp("clean"), count=2)


def test_denoise_trains_and_resumes_with_pix2pix_loss(denoise_run):
  workdir, first, again = denoise_run
  assert "Resumed" not in first.stderr
  assert "Resumed from the checkpoint of step 2" in again.stderr
  scalars, _ = read_events(workdir)
  assert [s for s, _ in scalars["g_l1"]] == [2, 4]
  for step in (2, 4):
    at = {tag: dict(scalars[tag])[step] for tag in ("g_loss", "g_l1", "g_adversarial")}
    assert at["g_loss"] == pytest.approx(200 * at["g_l1"] + at["g_adversarial"], rel=1e-5)


def _only(step: str, **values) -> ml_collections.ConfigDict:
  """The recipe with its one_of forced to `step`, whose keys are set to `values`."""
  config = recipe_config(DENOISE)
  steps = list(config.degradation.steps)
  config.degradation.weights = tuple(1.0 if s == step else 0.0 for s in steps)
  config.degradation[step].update(values)
  return config


def test_denoise_gaussian_noise_has_the_given_sigma(photos):
  pairs = evaluate.load_pairs(f"folder:{photos}", _only("gaussian", sigma=(0.1, 0.1)), seed=0)
  residual = np.concatenate([(p.degraded - p.clean).ravel() for p in pairs])
  inside = np.concatenate([((p.clean > 0.3) & (p.clean < 0.7)).ravel() for p in pairs])  # Away from clipping.
  assert residual[inside].mean() == pytest.approx(0.0, abs=0.01)
  assert residual[inside].std() == pytest.approx(0.1, abs=0.01)


def test_denoise_poisson_noise_variance_is_intensity_over_peak(photos):
  pairs = evaluate.load_pairs(f"folder:{photos}", _only("poisson", peak=(20.0, 20.0)), seed=0)
  clean = np.concatenate([p.clean.ravel() for p in pairs])
  residual = np.concatenate([(p.degraded - p.clean).ravel() for p in pairs])
  inside = (clean > 0.2) & (clean < 0.6)  # Away from clipping at 1.
  # Shot noise: counts ~ Poisson(peak x), so the variance of counts / peak is x / peak.
  assert np.mean(residual[inside] ** 2) == pytest.approx(np.mean(clean[inside]) / 20.0, rel=0.1)
  bright, dark = inside & (clean > 0.45), inside & (clean < 0.35)
  assert np.var(residual[bright]) > 1.2 * np.var(residual[dark])  # Noisier where brighter, unlike Gaussian noise.


def test_denoise_median_baseline_beats_the_noisy_photo(photos):
  config = recipe_config(DENOISE)
  assert config.task.baseline == "median"
  median = evaluate.run(eval_args(baseline="median", config=config, data=f"folder:{photos}"))
  identity = evaluate.run(eval_args(baseline="identity", config=config, data=f"folder:{photos}"))
  assert median["mean"]["psnr_rgb"] > identity["mean"]["psnr_rgb"]


def test_denoise_evaluates_and_restores_the_run(denoise_run, photos, tmp_path):
  workdir, _, _ = denoise_run
  report = evaluate.run(eval_args(workdir=str(workdir), data=f"folder:{photos}"))
  assert report["step"] == 4
  assert all(np.isfinite(report["mean"][k]) for k in ("psnr_rgb", "ssim_rgb"))
  Image.fromarray(photo((37, 50), 3)).save(tmp_path / "noisy.png")
  out = tmp_path / "restored.png"
  assert restore.main(["--workdir", str(workdir), "--input", str(tmp_path / "noisy.png"), "--output", str(out),
                       "--tile", "0"]) == 0
  with Image.open(out) as image:
    assert image.mode == "RGB" and image.size == (50, 37)
