"""MATLAB-style bicubic imresize and the degradation contract: registry, config checks, determinism, prepare."""

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


# ---------------------------------------------------------------------------------------------------------
# The degradation contract.

from ml_collections import config_flags  # noqa: E402
from absl import flags  # noqa: E402

from restore_jax.degradations import channels_of, default_config, scale_of  # noqa: E402

_LEAVES = sorted(set(DEGRADATIONS) - {"chain", "one_of"})


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
  return skimage.data.astronaut()[100:164, 180:244].astype(np.float32) / 255.0


def test_bicubic_config_keeps_todays_numbers(photo):
  config = ml_collections.ConfigDict(dict(name="bicubic", scale=4))
  out = make_degradation(config)(photo, np.random.default_rng(0))
  assert set(out) == {"input"}
  assert out["input"].shape == (16, 16, 3) and out["input"].dtype == np.float32
  # The same arrays as the MATLAB-style imresize, bit for bit (the 28.42 dB Set5 figure rests on them).
  np.testing.assert_array_equal(out["input"], np.clip(imresize(photo, 0.25), 0, 1))
  assert scale_of(config) == 4 and channels_of(config) == 3


@pytest.mark.parametrize("name", _LEAVES)
def test_every_family_meets_the_contract(name, photo):
  config = default_config(name)
  degrade = make_degradation(config)
  out = degrade(photo, np.random.default_rng(1))
  scale, channels = scale_of(config), channels_of(config)
  assert out["input"].shape == (64 // scale, 64 // scale, channels)
  assert out["input"].dtype == np.float32
  assert 0.0 <= out["input"].min() and out["input"].max() <= 1.0
  assert set(out) == ({"input", "mask"} if name == "damage" else {"input"})
  if name == "damage":
    assert out["mask"].shape == (64, 64, 1) and out["mask"].dtype == np.float32
  # Same config, target and seed: the same bits; another seed: another sample (fixed ones excepted).
  again = make_degradation(config)(photo.copy(), np.random.default_rng(1))
  for key in out:
    np.testing.assert_array_equal(out[key], again[key])
  if name not in ("bicubic", "resize", "grayscale"):
    other = degrade(photo, np.random.default_rng(2))
    assert not np.array_equal(out["input"], other["input"])


def test_scale_and_channels_of_compositions():
  gray_chain = dict(name="chain", steps=("blur", "gray", "noise"), blur=dict(name="gaussian_blur"),
                    gray=dict(name="grayscale"), noise=dict(name="gaussian_noise", prob=0.5))
  assert (scale_of(gray_chain), channels_of(gray_chain)) == (1, 1)
  sr_chain = dict(name="chain", steps=("blur", "down"), blur=dict(name="gaussian_blur", prob=0.5),
                  down=dict(name="resize", scale=2))
  assert (scale_of(sr_chain), channels_of(sr_chain)) == (2, 3)
  assert scale_of(dict(name="realistic", scale=4)) == 4
  assert scale_of(dict(name="pixel_shuffle", preset="high")) == 1


@pytest.mark.parametrize("config, message", [
    (dict(name="chain", steps=("noise",), noise=dict(name="gaussian_noise", sigma=-0.1)),
     "degradation.noise.sigma must be >= 0, got -0.1"),
    (dict(name="jpeg", quality=(0, 90)), "degradation.quality must be in [1, 100], got (0, 90)"),
    (dict(name="jpeg", quality=101), "degradation.quality must be in [1, 100], got 101"),
    (dict(name="pixel_shuffle", rate=1.5), "degradation.rate must be in [0, 1], got 1.5"),
    (dict(name="damage", coverage=(-0.1, 0.2)), "degradation.coverage must be in [0, 1], got (-0.1, 0.2)"),
    (dict(name="nope"), "set degradation.name to one of"),
    (dict(name="haze", thickness=0.5), "degradation.thickness is not an option of the 'haze' degradation"),
    (dict(name="gaussian_noise", sigma=(0.2, 0.1)), "degradation.sigma must be a number or a (low, high) pair"),
    (dict(name="gaussian_blur", sigma=0.0), "degradation.sigma must be > 0, got 0.0"),
    (dict(name="resize", method="lanczos"), "degradation.method must be one of 'area', 'bilinear', 'bicubic'"),
    (dict(name="pixel_shuffle", preset="medium"), "degradation.preset must be one of 'low', 'high'"),
    (dict(name="pixel_shuffle", preset="low", rate=0.3), "degradation.rate is set and so is degradation.preset"),
    (dict(name="chain", steps=("blur",)), "degradation.blur is missing"),
    (dict(name="chain", steps=("blur",), blur=dict(name="gaussian_blur"), jpg=dict(name="jpeg")),
     "degradation.jpg is neither an option"),
    (dict(name="chain", steps=("down",), down=dict(name="resize", prob=0.5)), "degradation.down.prob must be 1"),
    (dict(name="chain", steps=("blur",), blur=dict(name="gaussian_blur", prob=2)),
     "degradation.blur.prob must be in [0, 1], got 2"),
    (dict(name="chain", steps=("hole", "down"), hole=dict(name="damage"), down=dict(name="resize")),
     "degradation.down resizes the image after"),
    (dict(name="one_of", steps=("a", "b"), a=dict(name="grayscale"), b=dict(name="gaussian_noise")),
     "degradation.b gives a different size or channels"),
    (dict(name="realistic", resize_range=(1.2, 1.5)), "degradation.resize_range must include 1"),
    (dict(name="realistic", kernel_list=("iso", "box")), "degradation.kernel_list must be a non-empty tuple"),
    (dict(name="realistic", kernel_prob=(1.0, 0.0)), "degradation.kernel_prob must be 6 non-negative weights"),
])
def test_bad_configs_fail_at_build_time_naming_the_key(config, message):
  with pytest.raises(ValueError) as error:
    make_degradation(ml_collections.ConfigDict(config))
  assert message in str(error.value)


def test_every_key_is_overridable_from_the_command_line(photo):
  """Recipes write every key (default_config); --config.degradation.<step>.<key>=... then reaches any of them."""
  config = ml_collections.ConfigDict({"degradation": dict(
      name="chain", order="fixed", steps=("blur", "noise"),
      blur=dict(default_config("gaussian_blur"), prob=1.0), noise=dict(default_config("gaussian_noise"), prob=1.0))})
  argv = ["prog", "--config.degradation.noise.sigma=(0.0,0.05)", "--config.degradation.blur.sigma=1.5",
          "--config.degradation.order=shuffle", "--config.degradation.noise.prob=0.5"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  overridden = flag_values.config.degradation
  assert overridden.noise.sigma == (0.0, 0.05) and overridden.blur.sigma == (1.5,)
  degrade = make_degradation(overridden)
  assert degrade.order == "shuffle" and degrade.steps[1][2] == 0.5
  assert degrade.steps[0][1].sigma == (1.5, 1.5)  # A number given for a (low, high) key is a 1-tuple: fixed.
  # The same after a JSON round trip of the run's config.json (tuples come back as lists).
  import json  # pylint: disable=import-outside-toplevel
  restored = json.loads(json.dumps(overridden.to_dict()))
  np.testing.assert_array_equal(degrade(photo, np.random.default_rng(3))["input"],
                                make_degradation(restored)(photo, np.random.default_rng(3))["input"])


def test_realistic_default_config_has_every_key_of_real_esrgan():
  config = default_config("realistic")
  # train_realesrgan_x4plus.yml (Wang et al. 2021), its degradation keys and values.
  expected = dict(resize_prob=(0.2, 0.7, 0.1), resize_range=(0.15, 1.5), gaussian_noise_prob=0.5,
                  noise_range=(1.0, 30.0), poisson_scale_range=(0.05, 3.0), gray_noise_prob=0.4,
                  jpeg_range=(30, 95), second_blur_prob=0.8, resize_prob2=(0.3, 0.4, 0.3),
                  resize_range2=(0.3, 1.2), gaussian_noise_prob2=0.5, noise_range2=(1.0, 25.0),
                  poisson_scale_range2=(0.05, 2.5), gray_noise_prob2=0.4, jpeg_range2=(30, 95),
                  kernel_prob=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03), sinc_prob=0.1, blur_sigma=(0.2, 3.0),
                  betag_range=(0.5, 4.0), betap_range=(1.0, 2.0), sinc_prob2=0.1, blur_sigma2=(0.2, 1.5),
                  final_sinc_prob=0.8, scale=4)
  for key, value in expected.items():
    assert config[key] == value, key
  assert config["kernel_list"] == ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
                                   "plateau_aniso")


def test_presets_are_expressible():
  low = make_degradation(dict(name="pixel_shuffle", preset="low"))
  high = make_degradation(ml_collections.ConfigDict(dict(name="pixel_shuffle", preset="high")))
  assert low.rate == (0.25, 0.25) and high.rate == (0.5, 0.5)
  config = default_config("pixel_shuffle", preset="high")
  assert config == {"name": "pixel_shuffle", "preset": "high"}
  assert make_degradation(dict(name="exposure", preset="overexposed")).exposure[0] > 1


def test_prepare_keeps_real_photos_intact(photo):
  for name in ("realistic", "gaussian_noise", "pixel_shuffle", "jpeg", "mixed_blur"):
    prepared = make_degradation(default_config(name)).prepare(photo)
    assert set(prepared) == {"input"}
    np.testing.assert_array_equal(prepared["input"], photo)
  gray = make_degradation(dict(name="grayscale")).prepare(photo)["input"]
  # BT.601 luma, written out here.
  np.testing.assert_allclose(gray[:, :, 0], 0.299 * photo[..., 0] + 0.587 * photo[..., 1] + 0.114 * photo[..., 2],
                             atol=1e-6)


def test_prepare_for_damage_finds_pure_white_or_takes_the_mask(photo):
  damage = make_degradation(default_config("damage"))
  photo = np.minimum(photo, 0.99)  # This photo has saturated highlights, which would count as missing.
  marked = photo.copy()
  marked[10:20, 5:40] = 1.0  # Painted white, as a user marks damage.
  marked[30, 30] = (1.0, 1.0, 0.99)  # Almost white: not missing.
  prepared = damage.prepare(marked)
  expected = np.zeros((64, 64, 1), np.float32)
  expected[10:20, 5:40] = 1.0
  np.testing.assert_array_equal(prepared["mask"], expected)
  np.testing.assert_array_equal(prepared["input"], marked)
  given = np.zeros((64, 64), bool)
  given[40:50, 40:50] = True
  prepared = damage.prepare(photo, mask=given)
  assert prepared["mask"][40:50, 40:50].min() == 1 and prepared["mask"].sum() == 100
  assert (prepared["input"][40:50, 40:50] == 1.0).all()
  np.testing.assert_array_equal(prepared["input"][~given], photo[~given])
  # Colorization of damaged photos: gray first, then the damage's mask.
  chain = make_degradation(dict(name="chain", steps=("gray", "hole"), gray=dict(name="grayscale"),
                                hole=dict(name="damage")))
  prepared = chain.prepare(marked)
  assert prepared["input"].shape == (64, 64, 1)
  np.testing.assert_array_equal(prepared["mask"], expected)


def test_chain_order_and_probabilities(photo):
  # Exposure then haze and haze then exposure differ; a shuffled chain shows both orders.
  config = dict(name="chain", order="fixed", steps=("dark", "haze"),
                dark=dict(name="exposure", gamma=2.0, exposure=0.5), haze=dict(name="haze", transmission=0.5,
                                                                                airlight=1.0))
  dark_then_haze = 0.5 * (0.5 * photo ** 2) + 0.5
  haze_then_dark = 0.5 * (0.5 * photo + 0.5) ** 2
  out = make_degradation(config)(photo, np.random.default_rng(0))["input"]
  np.testing.assert_allclose(out, dark_then_haze, atol=1e-6)
  shuffled = make_degradation(dict(config, order="shuffle"))
  seen = set()
  for seed in range(12):
    out = shuffled(photo, np.random.default_rng(seed))["input"]
    seen.add("dark first" if np.allclose(out, dark_then_haze, atol=1e-6) else
             "haze first" if np.allclose(out, haze_then_dark, atol=1e-6) else "neither")
  assert seen == {"dark first", "haze first"}
  # prob 0.3: the step runs in about 30% of 400 samples (binomial sd 2.3%, bound 4 sd).
  sometimes = make_degradation(dict(name="chain", steps=("dark",), dark=dict(name="exposure", prob=0.3)))
  runs = [not np.array_equal(sometimes(photo, np.random.default_rng(s))["input"], photo) for s in range(400)]
  assert abs(np.mean(runs) - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 400)


def test_one_of_picks_by_weight(photo):
  config = dict(name="one_of", steps=("dark", "gray_noise"), weights=(3.0, 1.0),
                dark=dict(name="exposure", gamma=1.0, exposure=0.5),
                gray_noise=dict(name="gaussian_noise", sigma=0.05))
  degrade = make_degradation(config)
  dark = [np.allclose(degrade(photo, np.random.default_rng(s))["input"], 0.5 * photo) for s in range(400)]
  assert abs(np.mean(dark) - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 400)
  # Damage among the choices: every sample carries a mask (zeros when another choice ran).
  masked = make_degradation(dict(name="one_of", steps=("hole", "noise"), hole=dict(name="damage"),
                                 noise=dict(name="gaussian_noise")))
  assert all("mask" in masked(photo, np.random.default_rng(s)) for s in range(4))


def test_targets_must_be_rgb_and_divisible(photo):
  with pytest.raises(ValueError, match="3 channels"):
    make_degradation(dict(name="gaussian_noise"))(photo[:, :, :1], np.random.default_rng(0))
  with pytest.raises(ValueError, match="not a multiple of degradation.scale=3"):
    make_degradation(dict(name="resize", scale=3))(photo, np.random.default_rng(0))


def test_chain_and_one_of_helpers_write_every_key(photo):
  from restore_jax.degradations import chain_config, one_of_config  # pylint: disable=import-outside-toplevel

  config = chain_config(order="shuffle",
                        blur=one_of_config(weights=(2, 1), fixed=default_config("gaussian_blur", sigma=(1.5, 1.5)),
                                           resize=default_config("resize_blur")),
                        noise=dict(default_config("gaussian_noise"), prob=0.5))
  assert config["steps"] == ("blur", "noise") and config["blur"]["prob"] == 1.0 and config["noise"]["prob"] == 0.5
  assert config["blur"]["weights"] == (2.0, 1.0) and config["blur"]["fixed"]["kernel_size"] == (0, 0)
  degrade = make_degradation(ml_collections.ConfigDict(config))
  assert degrade(photo, np.random.default_rng(0))["input"].shape == photo.shape
  with pytest.raises(ValueError, match=r"chain_config\(...\).noise.sigma must be >= 0"):
    chain_config(noise=dict(name="gaussian_noise", sigma=-1.0))


@pytest.mark.parametrize("name", ["realistic", "damage", "pixel_shuffle", "mixed_blur"])
def test_degradations_pickle(name, photo):
  import pickle  # pylint: disable=import-outside-toplevel

  degrade = make_degradation(default_config(name))
  copy = pickle.loads(pickle.dumps(degrade))
  first, second = degrade(photo, np.random.default_rng(5)), copy(photo, np.random.default_rng(5))
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])
