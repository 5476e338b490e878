"""Evaluation: pairs from a folder, baselines, scores against scikit-image, the JSON report and the CLI."""

import functools
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import skimage.data
import skimage.metrics
from PIL import Image

from configs import sr_wgangp
from restore_jax import baselines, checkpoint, data, evaluate, models
from restore_jax import task as task_lib
from restore_jax.degradations.resize import imresize
from restore_jax.state import create_gan_state
from tests.cli import REPO, cli_env

SCALE = 4
# One size for every made image (71 x 75 is cropped to 68 x 72 at x4), so the metrics compile once.
HEIGHT, WIDTH = 71, 75
PHOTOS = {"astronaut.png": skimage.data.astronaut()[100:100 + HEIGHT, 180:180 + WIDTH],
          "chelsea.png": skimage.data.chelsea()[60:60 + HEIGHT, 150:150 + WIDTH]}
GRAY = "gray_camera.png"  # Saved as an 8-bit gray PNG: decoded to three equal channels.
BROKEN = "a_broken.png"  # Zero bytes; sorts first, so record indices and pair indices differ.


def _shared_data() -> Path:
  env = os.environ.get("RESTORE_JAX_SHARED_DATA")
  return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
  root = tmp_path_factory.mktemp("images")
  for name, pixels in PHOTOS.items():
    Image.fromarray(pixels).save(root / name)
  Image.fromarray(skimage.data.camera()[200:200 + HEIGHT, 220:220 + WIDTH]).save(root / GRAY)
  (root / BROKEN).write_bytes(b"")
  return root


def _clean_uint8(folder: Path, name: str) -> np.ndarray:
  """The clean image as the test reads it: RGB uint8, cropped to a multiple of the scale."""
  pixels = np.asarray(Image.open(folder / name).convert("RGB"))
  return pixels[:HEIGHT // SCALE * SCALE, :WIDTH // SCALE * SCALE]


def _sr_config(scale: int = SCALE) -> ml_collections.ConfigDict:
  config = sr_wgangp.get_config("tiny")
  config.degradation.scale = scale
  config.task.update(scale=scale, crop_border=scale)
  return config


def _uint8(image: np.ndarray) -> np.ndarray:
  return np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)


def _y_uint8(rgb: np.ndarray) -> np.ndarray:
  """MATLAB's rgb2ycbcr luma of uint8 RGB, in exact integers: round(16 + (65481 R + 128553 G + 24966 B) / 255000)."""
  rgb = rgb.astype(np.int64)
  milli = 65481 * rgb[..., 0] + 128553 * rgb[..., 1] + 24966 * rgb[..., 2]
  return (16 + (milli + 127_500) // 255_000).astype(np.float64)


def _reference_scores(restored: np.ndarray, clean: np.ndarray, border: int) -> dict[str, float]:
  """scikit-image's PSNR and SSIM (Gaussian window, sigma 1.5, population statistics) on 8-bit images."""
  crop = (slice(border, -border), slice(border, -border)) if border else (slice(None), slice(None))
  ssim = functools.partial(skimage.metrics.structural_similarity, gaussian_weights=True, sigma=1.5,
                           use_sample_covariance=False, data_range=255)
  restored8, clean8 = _uint8(restored), _uint8(clean)
  rgb_r, rgb_c = restored8[crop].astype(np.float64), clean8[crop].astype(np.float64)
  y_r, y_c = _y_uint8(restored8)[crop], _y_uint8(clean8)[crop]
  return {"psnr_rgb": skimage.metrics.peak_signal_noise_ratio(rgb_c, rgb_r, data_range=255),
          "psnr_y": skimage.metrics.peak_signal_noise_ratio(y_c, y_r, data_range=255),
          "ssim_rgb": ssim(rgb_c, rgb_r, channel_axis=-1),
          "ssim_y": ssim(y_c, y_r)}


def _assert_scores_close(got: dict, want: dict) -> None:
  for key in evaluate.METRICS:
    tolerance = 1e-3 if key.startswith("psnr") else 1e-4  # dB, SSIM.
    assert got[key] == pytest.approx(want[key], abs=tolerance), key


@pytest.fixture(scope="module")
def sr_pairs(folder):
  return evaluate.load_pairs(f"folder:{folder}", _sr_config())


def test_load_pairs_mod_crops_degrades_and_skips(sr_pairs, folder):
  assert [p.name for p in sr_pairs] == ["astronaut.png", "chelsea.png", GRAY]
  assert sr_pairs.skipped == 1 and sr_pairs.skipped_names == [BROKEN]
  for pair in sr_pairs:
    clean8 = _clean_uint8(folder, pair.name)
    assert pair.clean.dtype == np.float32 and pair.clean.shape == (68, 72, 3)
    np.testing.assert_array_equal(_uint8(pair.clean), clean8)
    # MATLAB-style bicubic x1/4 of the cropped image, stored as an 8-bit image would be.
    expected = np.round(np.clip(imresize(clean8 / 255.0, 0.25), 0, 1) * 255) / 255
    assert pair.degraded.shape == (17, 18, 3)
    np.testing.assert_allclose(pair.degraded, expected, atol=1e-6)
  gray = sr_pairs[2].clean
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_each_image_is_degraded_with_its_own_seeded_rng(folder, monkeypatch):
  noisy = lambda config: lambda image, rng: {"input": np.clip(image + rng.normal(0, 0.1, image.shape), 0, 1)}
  monkeypatch.setattr(evaluate, "make_degradation", noisy)
  config = ml_collections.ConfigDict({"degradation": {"name": "noise"}, "task": {"scale": 1}, "data": {}})
  pairs = evaluate.load_pairs(f"folder:{folder}", config, seed=7, max_images=2)
  assert [p.name for p in pairs] == ["astronaut.png", "chelsea.png"]
  for record_index, pair in zip((1, 2), pairs):  # Record 0 is the broken file.
    clean = np.asarray(Image.open(folder / pair.name), np.float32) / 255
    noise = np.random.default_rng([7, record_index]).normal(0, 0.1, clean.shape)
    np.testing.assert_allclose(pair.degraded, np.round(np.clip(clean + noise, 0, 1) * 255) / 255, atol=1e-6)


def test_bicubic_baseline_scores_match_scikit_image(sr_pairs):
  restore = baselines.bicubic(SCALE)
  report = evaluate.score(restore, sr_pairs, crop_border=SCALE)
  assert [image["name"] for image in report["images"]] == [p.name for p in sr_pairs]
  assert report["skipped"] == 1
  for image, pair in zip(report["images"], sr_pairs):
    _assert_scores_close(image, _reference_scores(restore(pair.degraded), pair.clean, SCALE))
  for key in evaluate.METRICS:
    assert report["mean"][key] == pytest.approx(np.mean([image[key] for image in report["images"]]), abs=1e-6)
  # Bicubic beats the blocky nearest-neighbour input on real photographs.
  identity = evaluate.score(baselines.identity(SCALE), sr_pairs, crop_border=SCALE)
  assert report["mean"]["psnr_y"] > identity["mean"]["psnr_y"] + 0.5


def test_bicubic_baseline_matches_jax_bicubic_away_from_the_border(sr_pairs):
  lr = sr_pairs[0].degraded
  ours = baselines.bicubic(SCALE)(lr)
  theirs = np.asarray(jax.image.resize(lr, ours.shape, "bicubic"))
  # The kernels agree; only the edge handling (mirrored vs clamped taps) differs, within 2 LR pixels of the edge.
  np.testing.assert_allclose(ours[8:-8, 8:-8], np.clip(theirs, 0, 1)[8:-8, 8:-8], atol=1e-5)


def test_identity_on_a_size_keeping_degradation_is_perfect(folder):
  pairs = evaluate.load_pairs(f"folder:{folder}", _sr_config(scale=1))
  report = evaluate.score(baselines.identity(1), pairs, crop_border=0)
  assert report["mean"]["psnr_rgb"] == np.inf and report["mean"]["psnr_y"] == np.inf
  assert report["mean"]["ssim_rgb"] == pytest.approx(1.0, abs=1e-6)
  assert report["mean"]["ssim_y"] == pytest.approx(1.0, abs=1e-6)
  assert " inf " in evaluate.format_table(report)
  assert json.loads(json.dumps(report))["mean"]["psnr_y"] == np.inf


def test_median_baseline_is_the_3x3_median_of_each_channel(sr_pairs):
  image = sr_pairs[0].clean
  windows = np.lib.stride_tricks.sliding_window_view(image, (3, 3), axis=(0, 1))
  expected = np.median(windows.reshape(*windows.shape[:3], 9), axis=-1)
  np.testing.assert_array_equal(baselines.median(3)(image)[1:-1, 1:-1], expected)
  with pytest.raises(ValueError, match="does not upscale"):
    baselines.make_baseline("median", task_lib.Task(scale=4))
  with pytest.raises(ValueError, match="Unknown baseline 'lanczos'"):
    baselines.make_baseline("lanczos", task_lib.Task(scale=4))


def test_score_rejects_a_restore_fn_of_the_wrong_size(sr_pairs):
  with pytest.raises(ValueError, match=r"shape \(17, 18, 3\).*clean image is \(68, 72, 3\)"):
    evaluate.score(lambda degraded, mask: degraded, sr_pairs, crop_border=SCALE)
  with pytest.raises(ValueError, match="no images"):
    evaluate.score(baselines.bicubic(SCALE), [], crop_border=SCALE)


def test_format_table_has_a_row_per_image_and_the_mean(sr_pairs):
  report = evaluate.score(baselines.bicubic(SCALE), sr_pairs, crop_border=SCALE)
  lines = evaluate.format_table(report).splitlines()
  assert lines[0].split()[:5] == ["image", "PSNR", "RGB", "PSNR", "Y"]
  rows = [line for line in lines if line.startswith(("astronaut", "chelsea", "gray"))]
  assert len(rows) == 3 and len({len(line) for line in lines[:5]}) == 1  # Aligned.
  mean_row = next(line for line in lines if line.startswith("mean of 3"))
  assert f"{report['mean']['psnr_y']:.2f}" in mean_row and f"{report['mean']['ssim_y']:.4f}" in mean_row
  assert BROKEN in lines[-1]


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "restore_jax.evaluate", *args], cwd=REPO, env=cli_env(1),
                        capture_output=True, text=True, timeout=timeout)


def test_cli_baseline_writes_the_json_report(folder, tmp_path):
  output = tmp_path / "report.json"
  result = _cli("--baseline", "bicubic", "--config", "configs/sr_wgangp.py:tiny", "--data", f"folder:{folder}",
                "--output", str(output))
  assert result.returncode == 0, result.stderr
  report = json.loads(output.read_text())
  assert list(report["mean"]) == ["psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y"]
  assert [image["name"] for image in report["images"]] == ["astronaut.png", "chelsea.png", GRAY]
  for image in report["images"]:
    assert list(image)[:5] == ["name", "psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y"]
    pixels = _clean_uint8(folder, image["name"]) / 255.0
    lr = np.round(np.clip(imresize(pixels, 0.25), 0, 1) * 255) / 255
    _assert_scores_close(image, _reference_scores(np.clip(imresize(lr, 4), 0, 1), pixels, SCALE))
  assert report["skipped"] == 1 and report["baseline"] == "bicubic" and report["crop_border"] == SCALE
  assert "mean of 3" in result.stdout


def _args(**overrides) -> types.SimpleNamespace:
  """What the CLI's flags hold, for calling evaluate.run in-process."""
  values = dict(workdir=None, baseline=None, config=None, data=None, output=None, no_ema=False, step=None,
                tensorboard=False, crop_border=None, seed=None, ms_ssim=False, max_images=0)
  return types.SimpleNamespace(**{**values, **overrides})


def test_cli_errors_are_messages(tmp_path):
  result = _cli("--baseline", "lanczos", "--config", "configs/sr_wgangp.py:tiny", "--data", f"folder:{tmp_path}")
  assert result.returncode != 0
  assert "error: Unknown baseline 'lanczos'" in result.stderr and "Traceback" not in result.stderr
  with pytest.raises(ValueError, match="either --workdir DIR .* or --baseline NAME"):
    evaluate.run(_args(data=f"folder:{tmp_path}"))
  with pytest.raises(FileNotFoundError, match="holds no images"):
    evaluate.run(_args(baseline="bicubic", config=_sr_config(), data=f"folder:{tmp_path}"))
  with pytest.raises(ValueError, match="needs --config"):
    evaluate.run(_args(baseline="bicubic", data=f"folder:{tmp_path}"))
  with pytest.raises(ValueError, match="not a training workdir"):
    evaluate.run(_args(workdir=str(tmp_path), data=f"folder:{tmp_path}"))
  config = _sr_config()
  config.eval.holdout = 0
  with pytest.raises(ValueError, match="Pass --data"):
    evaluate.default_eval_source(config)


# A saved run of the tiny recipe, with EMA parameters different from the raw generator's.
CHECKPOINT_STEP = 3


def _random_state(config, generator, discriminator):
  """A GANState of the run's structure filled with small random numbers: compiling the real initialisation
  takes tens of seconds on a CPU, and evaluation only needs some fixed weights to score."""
  shapes = jax.eval_shape(functools.partial(create_gan_state, config, generator, discriminator), jax.random.key(0))
  rng = np.random.default_rng(0)

  def fill(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree.map(fill, shapes)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  config = _sr_config()
  root = tmp_path_factory.mktemp("run")
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  state = _random_state(config, generator, discriminator)
  state = state.replace(ema_params=jax.tree.map(lambda p: 0.5 * p, state.generator.params))
  manager = checkpoint.make_manager(root / "checkpoints", keep=1)
  checkpoint.save(manager, CHECKPOINT_STEP, state, data.make_train_iterator(config))
  manager.wait_until_finished()
  manager.close()
  (root / "config.json").write_text(json.dumps(config.to_dict(), default=str))
  return root, generator, jax.device_get(state.ema_params), jax.device_get(state.generator.params)


def _model_references(generator, params, pairs) -> list[dict[str, float]]:
  apply = jax.jit(lambda p, x: jnp.clip(generator.apply({"params": p}, x), 0, 1))
  return [_reference_scores(np.asarray(apply(params, pair.degraded[None]))[0], pair.clean, SCALE)
          for pair in pairs]


def test_cli_scores_a_checkpoint_with_ema_weights_and_logs_to_tensorboard(workdir, folder, sr_pairs, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  # Slow; only here.

  root, generator, ema_params, _ = workdir
  output = tmp_path / "report.json"
  result = _cli("--workdir", str(root), "--data", f"folder:{folder}", "--output", str(output), "--tensorboard")
  assert result.returncode == 0, result.stderr
  report = json.loads(output.read_text())
  assert report["step"] == CHECKPOINT_STEP and report["ema"] is True and report["crop_border"] == SCALE
  for image, want in zip(report["images"], _model_references(generator, ema_params, sr_pairs)):
    _assert_scores_close(image, want)

  logged = {}
  for path in sorted(root.glob("events.out.tfevents*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        logged[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
  for key in evaluate.METRICS:
    assert logged[(f"eval/{key}", CHECKPOINT_STEP)] == pytest.approx(report["mean"][key], abs=1e-4)


def test_no_ema_scores_the_raw_generator(workdir, sr_pairs):
  root, generator, _, raw_params = workdir
  config, restore_fn, what = evaluate.evaluate_model(str(root), use_ema=False, step=None)
  assert what == {"workdir": str(root), "step": CHECKPOINT_STEP, "ema": False}
  assert task_lib.from_config(config).scale == SCALE
  report = evaluate.score(restore_fn, sr_pairs, crop_border=SCALE)
  for image, want in zip(report["images"], _model_references(generator, raw_params, sr_pairs)):
    _assert_scores_close(image, want)


def test_cli_bicubic_on_set5_gives_the_published_figure(tmp_path):
  set5 = _shared_data() / "CSet5"
  if len(sorted(set5.glob("*.png"))) != 5:
    pytest.skip(f"Set5 not found at {set5} (set RESTORE_JAX_SHARED_DATA).")
  output = tmp_path / "set5.json"
  result = _cli("--baseline", "bicubic", "--config", "configs/sr_wgangp.py", "--data", f"folder:{set5}",
                "--output", str(output))
  assert result.returncode == 0, result.stderr
  mean = json.loads(output.read_text())["mean"]
  # Published bicubic x4 on Set5, Y channel, 4-pixel border: 28.42 dB PSNR, 0.8104 SSIM (shared/data/README.md;
  # our Gaussian-window SSIM differs from that table's implementation in the fourth decimal).
  assert mean["psnr_y"] == pytest.approx(28.42, abs=0.005)
  assert mean["ssim_y"] == pytest.approx(0.8104, abs=0.001)


def test_tiled_scores_match_whole_image_scores(workdir, sr_pairs):
  """--tile restores through restore_jax.tiling: within 0.1 dB of the whole image."""
  root = workdir[0]
  _, whole_fn, _ = evaluate.evaluate_model(str(root), use_ema=True, step=None)
  _, tiled_fn, _ = evaluate.evaluate_model(str(root), use_ema=True, step=None, tile=16, tile_overlap=8)
  whole = evaluate.score(whole_fn, sr_pairs, crop_border=SCALE)
  tiled = evaluate.score(tiled_fn, sr_pairs, crop_border=SCALE)
  for a, b in zip(whole["images"], tiled["images"]):
    assert abs(a["psnr_rgb"] - b["psnr_rgb"]) < 0.1 and abs(a["psnr_y"] - b["psnr_y"]) < 0.1
  assert whole["images"][0]["psnr_rgb"] != tiled["images"][0]["psnr_rgb"]  # The tiled path really ran.


def test_colorization_skips_gray_photos_and_is_given_the_luma(folder):
  """A gray photo has no colour to recover (its gray input would score +inf): colorization skips it, counted.
  The colour photos' inputs are their luma, as Pillow's convert("L") computes it."""
  from configs import colorize_pix2pix  # pylint: disable=g-import-not-at-top

  pairs = evaluate.load_pairs(f"folder:{folder}", colorize_pix2pix.get_config("tiny"))
  assert [pair.name for pair in pairs] == ["astronaut.png", "chelsea.png"]
  assert sorted(pairs.skipped_names) == [BROKEN, GRAY]
  for pair in pairs:
    want = np.asarray(Image.open(folder / pair.name).convert("L"), np.float64) / 255.0
    assert pair.degraded.shape == want.shape + (1,)
    np.testing.assert_allclose(pair.degraded[..., 0], want, atol=1.01 / 255)
