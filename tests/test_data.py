"""Sources, decoding and the grain training pipeline."""

import io
import logging
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image
import pytest

from restore_jax.data import BadImage, make_source, make_train_iterator
from restore_jax.data import SKIP_REASONS, to_rgb_float
from restore_jax.degradations.resize import imresize

HR_CROP = 32
BATCH = 4
STEPS = 4


def make_config(source="samples", seed=0, augment=True, workers=0,
                batch_size=BATCH, crop_size=HR_CROP, permute_channels=False):
  return ml_collections.ConfigDict(dict(
      seed=seed, batch_size=batch_size,
      data=dict(source=source, crop_size=crop_size, augment=augment,
                num_workers=workers, prefetch=2, tfds_data_dir=None,
                image_key=None, max_skip_fraction=0.5,
                permute_channels=permute_channels),
      task=dict(scale=4), degradation=dict(name="bicubic", scale=4)))


def take(iterator, steps=STEPS):
  return [next(iterator) for _ in range(steps)]


def assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def sample_batches():
  return take(make_train_iterator(make_config()))


# ---------------------------------------------------------------- sources


def test_samples_source_finds_real_photos():
  source = make_source("samples")
  assert len(source) >= 3
  names = {Path(source.name(i)).name for i in range(len(source))}
  assert {"astronaut.png", "chelsea.png", "coffee.png"} <= names
  for i in range(len(source)):
    image = to_rgb_float(source[i])
    assert image.dtype == np.float32 and image.shape[-1] == 3
    assert min(image.shape[:2]) >= 128
    # A colour photograph: channels differ and the tones spread out.
    assert np.abs(image[..., 0] - image[..., 2]).mean() > 0.01
    assert image.std() > 0.05


def test_folder_source_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    make_source(f"folder:{tmp_path / 'missing'}")
  (tmp_path / "notes.txt").write_text("not an image")
  with pytest.raises(FileNotFoundError, match="holds no images"):
    make_source(f"folder:{tmp_path}")
  with pytest.raises(ValueError, match="Unknown data source"):
    make_source("imagenet")


# ---------------------------------------------------------------- decoding


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def test_decode_modes():
  rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
  np.testing.assert_allclose(to_rgb_float(_encode(Image.fromarray(rgb), "PNG")),
                             rgb / 255.0, atol=1e-6)

  gray = to_rgb_float(_encode(Image.fromarray(rgb[..., 0]), "PNG"))
  assert gray.shape == (6, 5, 3)
  np.testing.assert_allclose(gray, np.repeat(rgb[..., :1] / 255.0, 3, -1),
                             atol=1e-6)

  rgba = np.zeros((2, 2, 4), np.uint8)
  rgba[0, 0] = (255, 0, 0, 255)  # Opaque red stays red.
  rgba[0, 1] = (0, 0, 0, 0)  # Fully transparent black becomes white.
  rgba[1, :] = (0, 0, 255, 128)  # Half blue over white.
  out = to_rgb_float(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
  np.testing.assert_allclose(out[0, 0], (1, 0, 0), atol=1e-6)
  np.testing.assert_allclose(out[0, 1], (1, 1, 1), atol=1e-6)
  half = 128 / 255
  np.testing.assert_allclose(out[1, 0], (1 - half, 1 - half, 1), atol=1e-6)

  palette = Image.new("P", (3, 2))
  palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
  palette.putpixel((1, 0), 1)
  out = to_rgb_float(_encode(palette, "PNG"))
  np.testing.assert_allclose(out[0, 0], np.array([10, 20, 30]) / 255, atol=1e-6)
  np.testing.assert_allclose(out[0, 1], np.array([200, 100, 50]) / 255,
                             atol=1e-6)

  cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # Pure red in ink.
  out = to_rgb_float(_encode(cmyk, "JPEG", quality=100))
  np.testing.assert_allclose(out.mean((0, 1)), (1, 0, 0), atol=0.03)

  sixteen = np.array([[0, 32768], [65535, 1000]], np.uint16)
  out = to_rgb_float(_encode(Image.fromarray(sixteen), "PNG"))
  np.testing.assert_allclose(out[..., 1], sixteen / 65535.0, atol=1e-6)

  np.testing.assert_allclose(to_rgb_float(sixteen)[..., 0], sixteen / 65535.0)
  floats = np.array([[-0.5, 0.25], [0.75, 2.0]], np.float32)
  np.testing.assert_allclose(to_rgb_float(floats)[..., 2],
                             [[0, 0.25], [0.75, 1.0]])


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"), (b"hello, I am text", "decode"), (b"\x89PNG\r\n", "decode")])
def test_decode_rejects_garbage(data, reason):
  with pytest.raises(BadImage) as error:
    to_rgb_float(data)
  assert error.value.reason == reason


def test_decode_rejects_truncated_jpeg():
  photo = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
  data = _encode(Image.fromarray(photo), "JPEG")
  with pytest.raises(BadImage, match="decode") as error:
    to_rgb_float(data[:len(data) // 2])
  assert error.value.reason == "decode"


# ---------------------------------------------------------------- pipeline


def test_batch_layout(sample_batches):
  for step, batch in enumerate(sample_batches):
    assert batch["target"].shape == (BATCH, HR_CROP, HR_CROP, 3)
    assert batch["input"].shape == (BATCH, HR_CROP // 4, HR_CROP // 4, 3)
    assert batch["target"].dtype == batch["input"].dtype == np.float32
    assert batch["index"].dtype == np.int64
    assert batch["skipped"].dtype == np.int32
    np.testing.assert_array_equal(batch["index"],
                                  step * BATCH + np.arange(BATCH))
    np.testing.assert_array_equal(batch["skipped"], 0)
    assert batch["target"].min() >= 0 and batch["target"].max() <= 1
    assert batch["input"].min() >= 0 and batch["input"].max() <= 1


def test_lr_is_bicubic_of_hr(sample_batches):
  for batch in sample_batches:
    for hr, lr in zip(batch["target"], batch["input"]):
      np.testing.assert_allclose(lr, np.clip(imresize(hr, 0.25), 0, 1),
                                 atol=1e-6)


def test_same_seed_same_batches_other_seed_differs(sample_batches):
  assert_same_batches(sample_batches, take(make_train_iterator(make_config())))
  other = take(make_train_iterator(make_config(seed=1)))
  assert not np.array_equal(sample_batches[0]["target"], other[0]["target"])
  # Samples within a run differ from one another.
  hrs = np.concatenate([b["target"] for b in sample_batches])
  assert len({h.tobytes() for h in hrs}) == len(hrs)


def test_process_shards_concatenate_to_the_global_batch(sample_batches):
  shards = [take(make_train_iterator(make_config(), process_index=p,
                                     process_count=2)) for p in range(2)]
  for step, batch in enumerate(sample_batches):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([shards[0][step][key], shards[1][step][key]]),
          batch[key], err_msg=key)
    assert len(shards[0][step]["target"]) == BATCH // 2


def test_batch_must_divide_across_processes():
  with pytest.raises(ValueError, match="divisible"):
    make_train_iterator(make_config(), process_index=0, process_count=3)


def test_crop_size_must_be_a_multiple_of_the_scale():
  with pytest.raises(ValueError, match="multiple"):
    make_train_iterator(make_config(crop_size=30))


def test_resume_from_state_continues_identically(sample_batches):
  iterator = make_train_iterator(make_config())
  take(iterator, 2)
  state = iterator.get_state()
  resumed = make_train_iterator(make_config())
  resumed.set_state(state)
  assert_same_batches(take(resumed, 2), sample_batches[2:4])


def test_crop_without_augment_is_a_window_of_a_source_image():
  batch = next(make_train_iterator(make_config(augment=False)))
  source = make_source("samples")
  images = [to_rgb_float(source[i]) for i in range(len(source))]
  for hr in batch["target"]:
    assert any(_contains(image, hr) for image in images)


def _contains(image, patch):
  """Whether `patch` appears unrotated somewhere in `image`."""
  size = patch.shape[0]
  hits = np.argwhere(np.all(image == patch[0, 0], axis=-1))
  return any(np.array_equal(image[y:y + size, x:x + size], patch)
             for y, x in hits)


def test_augment_uses_the_symmetries_of_the_square():
  batch = next(make_train_iterator(make_config(augment=True)))
  source = make_source("samples")
  images = [to_rgb_float(source[i]) for i in range(len(source))]
  for hr in batch["target"]:
    variants = [np.rot90(flipped, -k) for flipped in (hr, hr[:, ::-1])
                for k in range(4)]
    # Undo any of the 8 symmetries to find the window in some photo.
    assert any(_contains(image, np.ascontiguousarray(v))
               for image in images for v in variants)


def test_permute_channels_reorders_each_crops_colours_before_degrading():
  """data.permute_channels: each target is a window of a photo with its colour channels in a random order, and
  the input is degraded from that reordered target."""
  import itertools
  batch = next(make_train_iterator(make_config(augment=False, permute_channels=True, batch_size=24)))
  source = make_source("samples")
  images = [to_rgb_float(source[i]) for i in range(len(source))]
  orders = set()
  for hr, lr in zip(batch["target"], batch["input"]):
    found = [order for order in itertools.permutations(range(3))
             if any(_contains(image, np.ascontiguousarray(hr[..., np.argsort(order)])) for image in images)]
    assert found, "a target that is no channel order of any window"
    orders.add(found[0])
    np.testing.assert_allclose(lr, np.clip(imresize(hr, 0.25), 0, 1), atol=1e-6)
  assert len(orders) >= 3  # 24 crops: P(at most 2 of the 6 orders) is below 1e-10.


def test_worker_processes_yield_the_same_batches(sample_batches):
  iterator = make_train_iterator(make_config(workers=2))
  assert_same_batches(take(iterator, 3), sample_batches[:3])


# ---------------------------------------------------------------- bad images


def _write_messy_folder(root: Path) -> tuple[list[str], dict[str, str]]:
  """Writes good images in many formats and modes plus broken ones.

  Returns the file names in sorted path order and {name: skip reason}.
  """
  rng = np.random.default_rng(7)
  photo = lambda: rng.integers(0, 256, (40, 48, 3), np.uint8)
  sub = root / "nested" / "deeper"
  sub.mkdir(parents=True)
  Image.fromarray(photo()).save(root / "a_rgb.png")
  Image.fromarray(photo()).save(root / "b_photo.jpg", quality=90)
  Image.fromarray(photo()).save(root / "c_photo.bmp")
  Image.fromarray(photo()).save(root / "d_photo.webp")
  Image.fromarray(photo()).save(sub / "e_photo.tiff")
  Image.fromarray(photo()[..., 0]).save(root / "f_gray.png")
  Image.fromarray(rng.integers(0, 256, (40, 48, 4), np.uint8), "RGBA").save(
      root / "g_rgba.png")
  Image.fromarray(photo()).quantize(16).save(root / "h_palette.png")
  Image.fromarray(photo()).convert("CMYK").save(root / "i_cmyk.jpg")
  Image.fromarray(rng.integers(0, 65536, (40, 48), np.uint16)).save(
      root / "j_16bit.png")
  Image.fromarray(photo()).save(root / "K_UPPER.PNG")
  Image.fromarray(photo()[:20, :20]).save(root / "l_small.png")
  (root / "m_empty.png").write_bytes(b"")
  (root / "n_text.png").write_text("this is not a picture")
  jpeg = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(jpeg, "JPEG")
  (sub / "o_truncated.jpg").write_bytes(jpeg.getvalue()[:600])
  (root / "readme.txt").write_text("ignored: not an image extension")
  bad = {"l_small.png": "small", "m_empty.png": "empty",
         "n_text.png": "decode", "o_truncated.jpg": "decode"}
  names = [p.name for p in sorted(
      p for p in root.rglob("*") if p.is_file() and p.suffix != ".txt")]
  return names, bad


def _expected_skips(names, bad, seed, positions):
  """Per the pipeline contract: start at the epoch permutation, walk forward."""
  n = len(names)
  expected = []
  for g in positions:
    epoch, offset = divmod(int(g), n)
    record = np.random.default_rng([seed, epoch]).permutation(n)[offset]
    reasons = []
    while names[record % n] in bad:
      reasons.append(bad[names[record % n]])
      record += 1
    expected.append(reasons)
  return expected


def test_messy_folder_skips_exactly_the_bad_files(tmp_path, caplog):
  names, bad = _write_messy_folder(tmp_path)
  assert len(make_source(f"folder:{tmp_path}")) == len(names) == 15
  config = make_config(source=f"folder:{tmp_path}", seed=3)
  with caplog.at_level(logging.WARNING):
    batches = take(make_train_iterator(config), 8)  # > 2 epochs.

  positions = np.concatenate([b["index"] for b in batches])
  expected = _expected_skips(names, bad, 3, positions)
  assert set(bad.values()) < set(SKIP_REASONS)
  for reason in SKIP_REASONS:
    got = np.concatenate([b[f"skipped_{reason}"] for b in batches])
    np.testing.assert_array_equal(got, [r.count(reason) for r in expected])
  skipped = np.concatenate([b["skipped"] for b in batches])
  np.testing.assert_array_equal(skipped, [len(r) for r in expected])
  assert skipped.sum() > 0  # The test would be vacuous without skips.
  for batch in batches:
    assert np.isfinite(batch["target"]).all()
    assert batch["target"].min() >= 0 and batch["target"].max() <= 1
  for name in bad:
    assert name in caplog.text


def test_all_bad_records_raise_a_clear_error(tmp_path):
  (tmp_path / "empty.png").write_bytes(b"")
  Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
  with pytest.raises(Exception, match="unusable"):
    next(make_train_iterator(make_config(source=f"folder:{tmp_path}")))
