"""MATLAB-style bicubic imresize and the degradation registry."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest
import skimage.data

from restore_jax import metrics
from restore_jax.degradations import DEGRADATIONS, make_degradation
from restore_jax.degradations.resize import imresize


def _shared_data() -> Path:
  env = os.environ.get("RESTORE_JAX_SHARED_DATA")
  if env:
    return Path(env)
  return Path(__file__).resolve().parents[2] / "shared" / "data"


def _to_uint8(img: np.ndarray) -> np.ndarray:
  return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def test_bicubic_x4_on_set5_matches_published_psnr():
  folder = _shared_data() / "CSet5"
  paths = sorted(folder.glob("*.png")) if folder.is_dir() else []
  if len(paths) != 5:
    pytest.skip(f"Set5 not found at {folder} (set RESTORE_JAX_SHARED_DATA).")
  psnrs = []
  for path in paths:
    hr = np.asarray(Image.open(path).convert("RGB"))
    hr = hr[:hr.shape[0] // 4 * 4, :hr.shape[1] // 4 * 4]
    lr = _to_uint8(imresize(hr / 255.0, 0.25))
    sr = imresize(lr / 255.0, 4)
    assert sr.shape == hr.shape
    # The metric does the rest: 8-bit rounding, rounded BT.601 Y, 4-pixel crop.
    psnrs.append(float(metrics.psnr(jnp.asarray(hr / 255.0, jnp.float32),
                                    jnp.asarray(sr, jnp.float32),
                                    y_channel=True, crop_border=4)))
  # Published bicubic x4 baseline on Set5 (Y, 4-pixel border): 28.42 dB.
  assert round(np.mean(psnrs), 2) == 28.42


def test_matches_jax_image_resize_away_from_borders():
  photo = skimage.data.astronaut().astype(np.float32) / 255.0
  for img, scale, border in ((photo, 0.25, 2), (photo[:64, :96], 4.0, 6)):
    ours = imresize(img, scale)
    expected_shape = (round(img.shape[0] * scale), round(img.shape[1] * scale), 3)
    assert ours.shape == expected_shape and ours.dtype == np.float32
    theirs = np.asarray(jax.image.resize(img, ours.shape, "bicubic",
                                         antialias=True))
    diff = np.abs(ours - theirs)
    # Same kernel and antialiasing; only edge handling differs (MATLAB mirrors,
    # jax renormalises), which reaches `border` output pixels in.
    assert diff[border:-border, border:-border].max() < 1e-5
    assert diff.max() < 0.1
    assert diff.mean() < 1e-3


@pytest.mark.parametrize("kwargs", [dict(scale=0.25), dict(scale=4),
                                    dict(scale=1 / 3),
                                    dict(output_shape=(7, 29))])
def test_constant_image_stays_constant(kwargs):
  img = np.full((24, 20, 3), 0.37, np.float32)
  out = imresize(img, **kwargs)
  np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_output_size_is_ceil_of_scaled_size():
  assert imresize(np.zeros((10, 7)), 0.25).shape == (3, 2)
  assert imresize(np.zeros((10, 7, 2)), 3).shape == (30, 21, 2)
  assert imresize(np.zeros((10, 7)), output_shape=(4, 9)).shape == (4, 9)


def test_hand_computed_upscale_of_an_impulse():
  # x2: output pixel x (1-based) samples u = x/2 + 1/4; Keys a = -0.5 gives
  # k(0.25) = 0.8671875, k(0.75) = 0.2265625, k(1.25) = -0.0703125,
  # k(1.75) = -0.0234375, k(2.25) = k(2.75) = 0.
  row = np.array([[0.0, 0.0, 1.0, 0.0, 0.0]])
  expected = [0.0, -0.0234375, -0.0703125, 0.2265625, 0.8671875,
              0.8671875, 0.2265625, -0.0703125, -0.0234375, 0.0]
  out = imresize(row, output_shape=(1, 10))
  np.testing.assert_allclose(out[0], expected, atol=1e-7)


def test_hand_computed_antialiased_downscale_with_mirrored_edge():
  # x1/2: kernel 0.5 * k(x / 2), centres u = 2x - 1/2. For x = 1 the taps at
  # input 0 and 1 (input 0 mirrors onto 1) weigh 0.5 * (k(0.75) + k(0.25));
  # for x = 2 taps 0 and 1 weigh 0.5 * (k(1.75) + k(1.25)).
  step = np.array([[1.0, 0, 0, 0, 0, 0, 0, 0]])
  out = imresize(step, output_shape=(1, 4))[0]
  np.testing.assert_allclose(out[:3], [0.546875, -0.046875, 0.0], atol=1e-7)
  # Where no tap reaches an edge, a ramp is sampled exactly at u - 1.
  ramp = np.arange(16, dtype=np.float64)[None]
  np.testing.assert_allclose(imresize(ramp, 0.5)[0, 2:6], [4.5, 6.5, 8.5, 10.5],
                             atol=1e-5)


def test_bicubic_degradation_from_config():
  config = ml_collections.ConfigDict(dict(name="bicubic", scale=4))
  degrade = make_degradation(config)
  hr = skimage.data.chelsea()[:64, :48].astype(np.float32) / 255.0
  lr = degrade(hr, np.random.default_rng(0))["input"]
  assert lr.shape == (16, 12, 3) and lr.dtype == np.float32
  assert lr.min() >= 0.0 and lr.max() <= 1.0
  np.testing.assert_allclose(lr, np.clip(imresize(hr, 0.25), 0, 1))
  assert "bicubic" in DEGRADATIONS
  with pytest.raises(ValueError, match="Unknown degradation"):
    make_degradation(dict(name="nope"))
