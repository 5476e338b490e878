"""The ESRGAN-family recipes (configs/sr_esrgan.py, configs/sr_realesrgan.py) at their `tiny` size, through the
command line, then evaluated and restored in-process.

ESRGAN is two runs: the PSNR-oriented `psnr_tiny` (L1 alone), then `tiny` with its generator initialised from it
(`generator.init_from`), trained for 2 steps and resumed to 4, with learning rates halved at each milestone.
Real-ESRGAN's `tiny` trains its GAN phase on the `realistic` degradation against the U-Net discriminator with
spectral norm.
"""

from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from cli import read_events, read_state, train
from recipe_checks import NO_EVAL, eval_args, recipe_config
from restore_jax import evaluate, inference, restore

ESRGAN = "configs/sr_esrgan.py"
REALESRGAN = "configs/sr_realesrgan.py:tiny"


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory) -> Path:
  folder = tmp_path_factory.mktemp("clean")
  rng = np.random.default_rng(0)
  small = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
  Image.fromarray(small).resize((52, 44), Image.BICUBIC).save(folder / "smooth.png")
  return folder


# ------------------------------------------------------------------------------------------------ ESRGAN


@pytest.fixture(scope="module")
def esrgan_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("esrgan")
  psnr = train(root / "psnr", "--config.total_steps=2", NO_EVAL, config=f"{ESRGAN}:psnr_tiny")
  init = f"--config.generator.init_from={root / 'psnr'}"
  first = train(root / "gan", "--config.total_steps=2", NO_EVAL, init, config=f"{ESRGAN}:tiny")
  again = train(root / "gan", NO_EVAL, init, config=f"{ESRGAN}:tiny")
  return root, psnr, first, again


def test_esrgan_psnr_stage_is_l1_alone(esrgan_runs):
  root, _, _, _ = esrgan_runs
  scalars, _ = read_events(root / "psnr")
  at = {tag: dict(scalars[tag])[2] for tag in ("g_loss", "g_l1")}
  assert at["g_loss"] == pytest.approx(at["g_l1"], rel=1e-6)  # The adversarial weight is 0.
  assert dict(scalars["lr_g"])[2] == pytest.approx(2e-4)


def test_esrgan_gan_stage_starts_from_the_psnr_run_and_resumes(esrgan_runs):
  root, _, first, again = esrgan_runs
  assert f"Generator initialised from step 2 of {root / 'psnr'} (EMA weights)" in first.stderr
  assert "Resumed from the checkpoint of step 2" in again.stderr
  assert "Generator initialised" not in again.stderr  # A resumed run keeps its own weights.
  # The first GAN step moved the PSNR run's EMA weights by one Adam step of at most ~lr per weight.
  psnr_ema = read_state(root / "psnr", 2)["ema_params"]["conv_first"]["kernel"]
  gan = read_state(root / "gan", 2)["generator"]["params"]["conv_first"]["kernel"]
  assert 0 < np.abs(gan - psnr_ema).max() < 3 * 1e-4


def test_esrgan_loss_and_step_decayed_learning_rates(esrgan_runs):
  root, _, _, _ = esrgan_runs
  scalars, _ = read_events(root / "gan")
  at = {tag: dict(scalars[tag]) for tag in ("g_loss", "g_l1", "g_adversarial", "lr_g", "lr_d")}
  for step in (2, 4):  # L1 x 0.01 + RaGAN x 0.005 (the perceptual term needs VGG19 weights: off in tiny).
    assert at["g_loss"][step] == pytest.approx(0.01 * at["g_l1"][step] + 0.005 * at["g_adversarial"][step], rel=1e-5)
  # 1e-4, halved at steps 2 and 3: steps 1-2 run at 1e-4, steps 3 and 4 at 5e-5 and 2.5e-5 (logged: their mean).
  for lr in ("lr_g", "lr_d"):
    assert at[lr][2] == pytest.approx(1e-4) and at[lr][4] == pytest.approx((5e-5 + 2.5e-5) / 2)


def test_esrgan_evaluates_against_bicubic_and_restores_x4(esrgan_runs, clean_folder, tmp_path):
  root, _, _, _ = esrgan_runs
  baseline = evaluate.run(eval_args(baseline="bicubic", config=recipe_config(f"{ESRGAN}:tiny"),
                                     data=f"folder:{clean_folder}"))
  assert baseline["baseline"] == "bicubic" and baseline["scale"] == 4 and baseline["crop_border"] == 4
  model = evaluate.run(eval_args(workdir=str(root / "gan"), data=f"folder:{clean_folder}"))
  assert model["step"] == 4 and np.isfinite(model["mean"]["psnr_y"])

  Image.open(clean_folder / "smooth.png").convert("L").resize((13, 11)).save(tmp_path / "gray.png")
  out = tmp_path / "restored.png"
  assert restore.main(["--workdir", str(root / "gan"), "--input", str(tmp_path / "gray.png"), "--output", str(out),
                       "--tile", "0"]) == 0
  with Image.open(out) as image:
    assert image.mode == "L" and image.size == (52, 44)  # x4, and a gray photo stays gray.


def test_esrgan_network_interpolation_blends_the_psnr_and_gan_weights(esrgan_runs, clean_folder, tmp_path, capsys):
  """ESRGAN section 3.4: (1 - alpha) * PSNR-model weights + alpha * GAN weights, in evaluate and restore."""
  root, _, _, _ = esrgan_runs
  gan, psnr = inference.load_generator(root / "gan"), inference.load_generator(root / "psnr")
  mixed = inference.interpolate_with_start(gan, 0.3)
  leaves = lambda loaded: [np.asarray(x) for x in jax.tree.leaves(loaded.variables)]
  assert len(leaves(mixed)) == len(leaves(gan)) > 0
  for m, p, g in zip(leaves(mixed), leaves(psnr), leaves(gan)):
    np.testing.assert_allclose(m, 0.7 * p + 0.3 * g, rtol=1e-6, atol=1e-8)
  assert any(not np.array_equal(p, g) for p, g in zip(leaves(psnr), leaves(gan)))  # The blend is not trivial.
  for g, end in zip(leaves(gan), leaves(inference.interpolate_with_start(gan, 1.0))):
    np.testing.assert_array_equal(end, g)
  # alpha 0 is the PSNR run, scored through evaluate's command-line path.
  data = f"folder:{clean_folder}"
  score = lambda workdir, **kw: evaluate.run(eval_args(workdir=str(workdir), data=data, **kw))
  blended = score(root / "gan", interpolate=0.0)
  assert blended["interpolate"] == 0.0 and blended["mean"] == score(root / "psnr")["mean"]
  with pytest.raises(ValueError, match="alpha must be in"):
    inference.interpolate_with_start(gan, 1.5)
  with pytest.raises(ValueError, match="init_from is empty"):
    inference.interpolate_with_start(psnr, 0.5)

  Image.open(clean_folder / "smooth.png").resize((13, 11)).save(tmp_path / "small.png")
  out = tmp_path / "restored.png"
  args = ["--input", str(tmp_path / "small.png"), "--output", str(out), "--tile", "0", "--interpolate", "0.5"]
  assert restore.main(["--workdir", str(root / "gan"), *args]) == 0
  assert "interpolated, alpha 0.5" in capsys.readouterr().out and Image.open(out).size == (52, 44)
  assert restore.main(["--workdir", str(root / "psnr"), *args]) == 2
  assert "init_from is empty" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ Real-ESRGAN


@pytest.fixture(scope="module")
def realesrgan_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("realesrgan") / "run"
  # One run of 4 steps: resuming is the same code for every recipe (ESRGAN's test above and tests/test_resume.py).
  return workdir, train(workdir, NO_EVAL, config=REALESRGAN)


def test_realesrgan_trains_with_the_spectral_norm_unet(realesrgan_run):
  workdir, _ = realesrgan_run
  state = read_state(workdir, 4)
  # Spectral norm's power-iteration vectors live in the discriminator's batch statistics and moved in training.
  u_vectors = {k for k in state["discriminator"]["batch_stats"] if k.endswith("_sn")}
  assert u_vectors == {f"conv{i}_sn" for i in range(1, 9)}
  scalars, _ = read_events(workdir)
  at = {tag: dict(scalars[tag])[4] for tag in ("g_loss", "g_l1", "g_adversarial")}
  assert at["g_loss"] == pytest.approx(at["g_l1"] + 0.1 * at["g_adversarial"], rel=1e-5)  # L1 1 + GAN 0.1.


def test_realesrgan_evaluates_and_restores_x4(realesrgan_run, clean_folder, tmp_path):
  workdir, _ = realesrgan_run
  config = recipe_config(REALESRGAN)
  assert config.degradation.name == "realistic"
  baseline = evaluate.run(eval_args(baseline="bicubic", config=config, data=f"folder:{clean_folder}"))
  model = evaluate.run(eval_args(workdir=str(workdir), data=f"folder:{clean_folder}"))
  assert baseline["baseline"] == "bicubic" and model["step"] == 4
  # Both scored the same degraded inputs (one seed per image): the reports name the same images and sizes.
  assert [i["name"] for i in baseline["images"]] == [i["name"] for i in model["images"]] == ["smooth.png"]

  photo = tmp_path / "photo.jpg"
  Image.open(clean_folder / "smooth.png").resize((13, 11)).save(photo, quality=60)
  out = tmp_path / "restored.jpg"
  assert restore.main(["--workdir", str(workdir), "--input", str(photo), "--output", str(out), "--tile", "0"]) == 0
  with Image.open(out) as image:
    assert image.format == "JPEG" and image.mode == "RGB" and image.size == (52, 44)
