"""The `realistic` chain (Real-ESRGAN's second-order model): one fully pinned-down path against a reference
pipeline written here with scipy, PyTorch and Pillow, and the random choices against the published rates."""

import io
import math

import numpy as np
from PIL import Image
import pytest
import scipy.ndimage
import scipy.stats
import skimage.data
import torch

from restore_jax.degradations import default_config, make_degradation, realistic


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
  buffer = io.BytesIO()
  Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
  return np.asarray(Image.open(io.BytesIO(buffer.getvalue()))).astype(np.float64) / 255


def test_pinned_path_matches_a_reference_pipeline():
  """Blur (21 x 21 Gaussian, sigma 1.5) -> JPEG 90 -> bicubic x1/4 without antialiasing -> JPEG 95 -> 8 bits."""
  target = skimage.data.astronaut()[100:228, 150:278].astype(np.float32) / 255.0
  config = dict(default_config("realistic"), kernel_list=("iso",), kernel_prob=(1.0,), sinc_prob=0.0,
                blur_sigma=(1.5, 1.5), blur_kernel_size=(21, 21), resize_prob=(0.0, 0.0, 1.0),
                gaussian_noise_prob=1.0, noise_range=(0.0, 0.0), jpeg_range=(90, 90), second_blur_prob=0.0,
                resize_prob2=(0.0, 0.0, 1.0), gaussian_noise_prob2=1.0, noise_range2=(0.0, 0.0),
                jpeg_range2=(95, 95), final_sinc_prob=0.0, resize_modes=("bicubic",))
  out = make_degradation(config)(target, np.random.default_rng(0))["input"]

  axis = np.arange(21) - 10
  grid = np.stack(np.meshgrid(axis, axis), -1)
  kernel = scipy.stats.multivariate_normal(cov=1.5 ** 2 * np.eye(2)).pdf(grid)
  blurred = scipy.ndimage.correlate(target.astype(np.float64), kernel[:, :, None] / kernel.sum(), mode="reflect")
  first = _jpeg(blurred, 90)
  tensor = torch.from_numpy(first).permute(2, 0, 1)[None]
  small = torch.nn.functional.interpolate(tensor, size=(32, 32), mode="bicubic", align_corners=False)
  expected = np.round(_jpeg(small[0].permute(1, 2, 0).numpy(), 95) * 255) / 255

  assert out.shape == (32, 32, 3)
  # The bicubic x1/4 of 8-bit levels lands exactly on half levels often (its taps are binary fractions), and
  # float32 against float64 rounding sends such ties either way; JPEG then spreads a flipped level over its
  # 8 x 8 block. So: a tenth of a level on average, a few levels at most. A plausible mistake is far off:
  # PyTorch's antialiased bicubic instead of the plain one is 3 levels off on average.
  levels = np.abs(out - expected) * 255
  assert levels.mean() < 0.3 and levels.max() <= 3.0 + 1e-3
  antialiased = torch.nn.functional.interpolate(tensor, size=(32, 32), mode="bicubic", align_corners=False,
                                                antialias=True)
  wrong = np.round(_jpeg(antialiased[0].permute(1, 2, 0).numpy(), 95) * 255) / 255
  assert (np.abs(out - wrong) * 255).mean() > 1.0


def test_random_choices_follow_real_esrgan_rates(monkeypatch):
  """Over many samples, each decision happens at the rate of train_realesrgan_x4plus.yml (within 4 binomial
  standard errors)."""
  calls = {"resize": [], "noise": [], "jpeg": [], "filters": []}

  def record(name, fn, summary):
    def wrapper(*args, **kwargs):
      calls[name].append(summary(*args, **kwargs))
      return fn(*args, **kwargs)
    return wrapper

  monkeypatch.setattr(realistic, "_resize", record("resize", realistic._resize, lambda img, h, w, *a: (
      img.shape[0], h)))
  monkeypatch.setattr(realistic, "add_gaussian", record("noise", realistic.add_gaussian, lambda img, rng, sigma,
                                                        gray: ("gaussian", sigma * 255, gray)))
  monkeypatch.setattr(realistic, "add_levels_poisson", record("noise", realistic.add_levels_poisson,
                                                              lambda img, rng, gain, gray: ("poisson", gain, gray)))
  monkeypatch.setattr(realistic, "compress", record("jpeg", realistic.compress, lambda img, quality: quality))
  monkeypatch.setattr(realistic.filtering, "correlate", record(
      "filters", realistic.filtering.correlate, lambda img, kernel: kernel.shape[0]))

  degrade = make_degradation(default_config("realistic"))
  target = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
  runs = 300
  for seed in range(runs):
    for name in calls:
      calls[name].append("|")
    out = degrade(target, np.random.default_rng(seed))["input"]
    assert out.shape == (16, 16, 3)
    assert (np.round(out * 255) == out * 255).all()

  def per_run(name):
    runs_calls, current = [], []
    for item in calls[name][1:] + ["|"]:
      if item == "|":
        runs_calls.append(current)
        current = []
      else:
        current.append(item)
    return runs_calls

  def near(count, p, n):
    return abs(count / n - p) < 4 * math.sqrt(p * (1 - p) / n)

  resizes, noises, qualities, filters = (per_run(n) for n in ("resize", "noise", "jpeg", "filters"))
  first = [r[0] for r in resizes]
  # First resize: to floor(64 f); an up-factor below 65/64 still gives 64.
  assert near(sum(h > s for s, h in first), 0.2 * (1.5 - 65 / 64) / 0.5, runs)
  assert near(sum(h < s for s, h in first), 0.7, runs)
  assert all(9 <= h <= 96 for _, h in first)  # floor(64 * [0.15, 1.5]).
  second = [r[1] for r in resizes]
  # Second resize: to int(64 / 4 * f); an up-factor below 17/16 still gives 16 (so looks like keep).
  assert near(sum(h > 16 for _, h in second), 0.3 * (1.2 - 17 / 16) / 0.2, runs)
  assert near(sum(h < 16 for _, h in second), 0.4, runs)
  assert all(r[2][1] == 16 for r in resizes)  # The final resize to h / scale.
  for stage, (sigma_high, gain_high) in enumerate(((30, 3.0), (25, 2.5))):
    picks = [n[stage] for n in noises]
    gaussian = [p for p in picks if p[0] == "gaussian"]
    assert near(len(gaussian), 0.5, runs)
    assert near(sum(p[2] for p in picks), 0.4, runs)  # Gray noise.
    assert all(1 <= p[1] <= sigma_high for p in gaussian)
    assert all(0.05 <= p[1] <= gain_high for p in picks if p[0] == "poisson")
  assert all(30 <= q <= 95 for run in qualities for q in run) and all(len(run) == 2 for run in qualities)
  # Filters: the first blur always, the second with probability 0.8, the final sinc with probability 0.8.
  counts = [len(f) for f in filters]
  assert all(1 <= c <= 3 for c in counts)
  assert near(sum(counts) - runs, 0.8, 2 * runs)  # Two Bernoulli(0.8) draws per run.
  assert {f[0] for f in filters} == set(range(7, 22, 2))


class _RecordingRng:
  """Passes Poisson draws through to a real generator, keeping the means asked for."""

  def __init__(self, seed: int):
    self.rng, self.means = np.random.default_rng(seed), []

  def poisson(self, means):
    self.means.append(np.asarray(means, np.float64))
    return self.rng.poisson(means)


def test_poisson_noise_follows_real_esrgan():
  """Levels rounded to 8 bits; peak = distinct levels rounded up to a power of 2; noise = gain * (counts / peak
  - level / 255), added to the unrounded image."""
  flat = np.full((128, 128, 3), 0.5, np.float32)  # One level: peak 1, so Poisson(128 / 255) counts.
  rng = _RecordingRng(0)
  out = realistic.add_levels_poisson(flat, rng, 0.05, gray=False).astype(np.float64)
  level = 128 / 255
  np.testing.assert_allclose(rng.means[0], level)
  assert out.max() < 1.0  # Unclipped: counts of 10 (P < 1e-10 here) would be needed to reach 1.
  counts = (out - 0.5) / 0.05 + level  # Back to counts / peak.
  np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)
  n = counts.size
  assert abs(counts.mean() - level) < 4 * np.sqrt(level / n)
  assert abs(counts.var() - level) < 4 * level * np.sqrt((2 + 1 / level) / n)  # Poisson: mu4 = 3 mu^2 + mu.
  # A ramp over all 256 levels: peak 256; a gray ramp over levels 0..51: 52 levels, peak 64.
  ramp = np.repeat((np.arange(256) / 255).reshape(8, 32, 1), 3, axis=2).astype(np.float32)
  rng = _RecordingRng(1)
  realistic.add_levels_poisson(ramp, rng, 1.0, gray=False)
  np.testing.assert_allclose(rng.means[0], np.broadcast_to(np.arange(256).reshape(8, 32, 1) / 255 * 256,
                                                           (8, 32, 3)), atol=1e-9)
  realistic.add_levels_poisson(ramp * 0.2, rng, 1.0, gray=True)
  assert rng.means[1].shape == (8, 32, 1)  # One plane: the luma's.
  np.testing.assert_allclose(rng.means[1], np.round(np.arange(256) * 0.2).reshape(8, 32, 1) / 255 * 64, atol=1e-9)


def test_other_scales():
  target = np.random.default_rng(1).random((48, 48, 3)).astype(np.float32)
  for scale in (1, 2):
    assert make_degradation(dict(name="realistic", scale=scale))(target, np.random.default_rng(0))[
        "input"].shape == (48 // scale, 48 // scale, 3)
  with pytest.raises(ValueError, match="not a multiple of degradation.scale=4"):
    make_degradation(dict(name="realistic"))(target[:46], np.random.default_rng(0))
