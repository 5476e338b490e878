"""Messy data at scale: every odd kind of file decodes right or is skipped for the right reason, and held-out splits.

Decodes are checked against TensorFlow's image decoders (libpng / libjpeg, independent of PIL) or hand-computed
values; skip counts against a hand count of the folder the test writes.
"""

import io
import logging
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from restore_jax.data import SKIP_REASONS, BadImage, eval_source, holdout_split, make_source, make_train_iterator
from restore_jax.data import to_rgb_float, train_source

HR_CROP = 32
BATCH = 4
MAX_PIXELS = 20_000  # data.max_image_pixels for the messy folder: its "large" photo is over it, the rest under.


def make_config(source, *, seed=0, holdout=0, eval_data="", max_image_pixels=MAX_PIXELS):
  return ml_collections.ConfigDict(dict(
      seed=seed, batch_size=BATCH,
      data=dict(source=source, crop_size=HR_CROP, augment=False, num_workers=0, prefetch=2, tfds_data_dir=None,
                image_key=None, max_skip_fraction=0.5, max_image_pixels=max_image_pixels),
      task=dict(scale=4), degradation=dict(name="bicubic", scale=4),
      eval=dict(data=eval_data, holdout=holdout)))


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
  """A PNG that claims width x height RGB pixels and holds none: a decompression bomb costs no disk here."""
  def chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
  header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no filter, no interlace.
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def tf_decode(data: bytes, channels: int = 0, dtype=tf.uint8) -> np.ndarray:
  return tf.io.decode_image(data, channels=channels, dtype=dtype, expand_animations=False).numpy()


def reason_of(record, **kwargs) -> str:
  with pytest.raises(BadImage) as error:
    to_rgb_float(record, **kwargs)
  return error.value.reason


def sorted_names(root: Path) -> list[str]:
  source = make_source(f"folder:{root}")
  return [source.name(i) for i in range(len(source))]


RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (40, 48, 3), np.uint8)


# ---------------------------------------------------------------- decoding, one kind at a time


def test_png_named_jpg_decodes_by_content(tmp_path):
  data = encode(Image.fromarray(PHOTO), "PNG")
  (tmp_path / "photo.jpg").write_bytes(data)
  np.testing.assert_array_equal(to_rgb_float(str(tmp_path / "photo.jpg")), tf_decode(data) / np.float32(255))


def test_broken_files_are_skipped_by_reason(tmp_path):
  (tmp_path / "empty.png").write_bytes(b"")
  (tmp_path / "text.png").write_text("a text file with an image's name")
  jpeg = encode(Image.fromarray(PHOTO), "JPEG")
  (tmp_path / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 3])
  (tmp_path / "noise.jpg").write_bytes(b"\xff\xd8\xff\xe0" + RNG.bytes(3000))  # JPEG magic, then garbage.
  assert reason_of(str(tmp_path / "empty.png")) == "empty"
  assert reason_of(b"") == "empty"
  assert reason_of(str(tmp_path / "text.png")) == "decode"
  assert reason_of(str(tmp_path / "truncated.jpg")) == "decode"
  assert reason_of(str(tmp_path / "noise.jpg")) == "decode"
  assert reason_of(str(tmp_path / "missing.png")) == "decode"  # Vanished between listing and reading.
  assert set(SKIP_REASONS) >= {"decode", "empty", "huge", "small"}


def test_huge_images_are_refused_from_the_header(monkeypatch):
  # 10^10 pixels: PIL raises DecompressionBombError whatever data.max_image_pixels says; skipped as "huge".
  assert reason_of(png_header_only(100_000, 100_000)) == "huge"
  assert reason_of(png_header_only(100_000, 100_000), max_pixels=10**11) == "huge"
  with pytest.warns(Image.DecompressionBombWarning):  # 10^8 pixels: PIL's own warning still speaks, ...
    assert reason_of(png_header_only(10_000, 10_000), max_pixels=10**6) == "huge"  # ... our limit refuses it.

  # The limit is inclusive and read from the header: 100x100 passes a 10,000 limit and only then fails to decode
  # (the file holds no pixel data); a 9,999 limit refuses it before decoding.
  assert reason_of(png_header_only(100, 100), max_pixels=10_000) == "decode"
  assert reason_of(png_header_only(100, 100), max_pixels=9_999) == "huge"

  photo = RNG.integers(0, 256, (150, 200, 3), np.uint8)
  data = encode(Image.fromarray(photo), "PNG")
  assert reason_of(data, max_pixels=29_999) == "huge"
  np.testing.assert_array_equal(to_rgb_float(data, max_pixels=30_000), photo / np.float32(255))
  assert reason_of(photo, max_pixels=29_999) == "huge"  # Arrays obey the same limit.
  # A stricter limit set on PIL by the user (here 1,000: 30,000 pixels is past twice it) still protects too.
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
  with pytest.raises(BadImage, match="MAX_IMAGE_PIXELS") as error:
    to_rgb_float(data, max_pixels=30_000)
  assert error.value.reason == "huge"


def test_decoding_leaves_pils_decompression_bomb_protection_on():
  """Decoding training data never switches off PIL's own limit for the rest of the process."""
  limit = Image.MAX_IMAGE_PIXELS
  assert limit is not None
  photo = encode(Image.fromarray(PHOTO), "PNG")
  to_rgb_float(photo)
  assert reason_of(png_header_only(100_000, 100_000)) == "huge"
  assert Image.MAX_IMAGE_PIXELS == limit
  with pytest.raises(Image.DecompressionBombError):  # Any other reader in the process is still protected.
    Image.open(io.BytesIO(png_header_only(100_000, 100_000)))


def test_grayscale_and_tiny_images():
  data = encode(Image.fromarray(PHOTO[..., 0]), "PNG")
  gray = tf_decode(data, channels=1) / np.float32(255)
  np.testing.assert_array_equal(to_rgb_float(data), np.repeat(gray, 3, axis=-1))
  one = encode(Image.fromarray(np.array([[[10, 200, 30]]], np.uint8)), "PNG")
  np.testing.assert_allclose(to_rgb_float(one), [[[10 / 255, 200 / 255, 30 / 255]]], atol=1e-7)


def test_rgba_is_composited_on_white():
  rgba = RNG.integers(0, 256, (40, 48, 4), np.uint8)
  data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
  reference = tf_decode(data, channels=4) / np.float32(255)
  alpha = reference[..., 3:]
  np.testing.assert_allclose(to_rgb_float(data), reference[..., :3] * alpha + 1 - alpha, atol=1e-6)


def test_palette_images_with_and_without_transparency():
  palette = Image.fromarray(PHOTO).quantize(16)
  data = encode(palette, "PNG")
  np.testing.assert_array_equal(to_rgb_float(data), tf_decode(data, channels=3) / np.float32(255))

  palette.info["transparency"] = 0  # Palette entry 0 is fully transparent: white after compositing.
  data = encode(palette, "PNG", transparency=0)
  reference = tf_decode(data, channels=4) / np.float32(255)
  assert (reference[..., 3] == 0).any()
  alpha = reference[..., 3:]
  np.testing.assert_allclose(to_rgb_float(data), reference[..., :3] * alpha + 1 - alpha, atol=1e-6)


def test_cmyk_jpeg_colours():
  # 16x16 blocks (whole JPEG MCUs) of pure inks: C+M+Y... -> the RGB a printer's inks make on white paper.
  inks = {(0, 255, 255, 0): (1, 0, 0), (255, 0, 255, 0): (0, 1, 0), (255, 255, 0, 0): (0, 0, 1),
          (0, 0, 0, 0): (1, 1, 1), (0, 0, 0, 255): (0, 0, 0)}
  image = Image.new("CMYK", (16 * len(inks), 16))
  for k, ink in enumerate(inks):
    image.paste(ink, (16 * k, 0, 16 * (k + 1), 16))
  out = to_rgb_float(encode(image, "JPEG", quality=100))
  assert out.shape == (16, 16 * len(inks), 3)
  for k, rgb in enumerate(inks.values()):
    np.testing.assert_allclose(out[4:12, 16 * k + 4:16 * k + 12].mean((0, 1)), rgb, atol=0.03)


def test_sixteen_bit_images_keep_all_sixteen_bits(tmp_path):
  gray = RNG.integers(0, 65536, (40, 48), np.uint16)
  data = encode(Image.fromarray(gray), "PNG")
  reference = tf_decode(data, channels=1, dtype=tf.uint16)[..., 0] / np.float32(65535)
  np.testing.assert_allclose(to_rgb_float(data), np.repeat(reference[..., None], 3, -1), atol=1e-7)

  # 48-bit RGB PNG (written by TensorFlow; PIL would read it as 8-bit), as bytes and as a file.
  rgb = RNG.integers(0, 65536, (40, 48, 3), np.uint16)
  data = tf.io.encode_png(rgb).numpy()
  reference = tf_decode(data, dtype=tf.uint16) / np.float32(65535)
  np.testing.assert_array_equal(reference, rgb / np.float32(65535))
  np.testing.assert_allclose(to_rgb_float(data), reference, atol=1e-7)
  (tmp_path / "rgb16.png").write_bytes(data)
  np.testing.assert_allclose(to_rgb_float(str(tmp_path / "rgb16.png")), reference, atol=1e-7)

  # 64-bit RGBA PNG: composited on white at 16-bit precision.
  rgba = RNG.integers(0, 65536, (40, 48, 4), np.uint16)
  unit = rgba / np.float64(65535)
  want = unit[..., :3] * unit[..., 3:] + 1 - unit[..., 3:]
  np.testing.assert_allclose(to_rgb_float(tf.io.encode_png(rgba).numpy()), want, atol=1e-6)

  # 16-bit RGB TIFF, written by tifffile.
  import tifffile  # pylint: disable=g-import-not-at-top

  tifffile.imwrite(tmp_path / "rgb16.tif", rgb, photometric="rgb")
  np.testing.assert_allclose(to_rgb_float(str(tmp_path / "rgb16.tif")), rgb / np.float32(65535), atol=1e-7)
  np.testing.assert_allclose(to_rgb_float((tmp_path / "rgb16.tif").read_bytes()), rgb / np.float32(65535),
                             atol=1e-7)


# ---------------------------------------------------------------- a messy folder through the pipeline


def write_messy_folder(root: Path) -> dict[str, str]:
  """20 files, bad ones never next to each other in sorted order (nor last); returns {name: skip reason}."""
  bad = {}

  def good(name, image, **kwargs):
    image.save(root / name, **kwargs)

  def skip(name, reason, data):
    (root / name).write_bytes(data)
    bad[name] = reason

  photo = lambda: RNG.integers(0, 256, (40, 48, 3), np.uint8)
  jpeg = encode(Image.fromarray(photo()), "JPEG")
  good("00_rgb.png", Image.fromarray(photo()))
  skip("01_empty.png", "empty", b"")
  good("02_gray.png", Image.fromarray(photo()[..., 0]))
  skip("03_text.png", "decode", b"not an image, despite the name")
  (root / "04_png_named.jpg").write_bytes(encode(Image.fromarray(photo()), "PNG"))
  skip("05_truncated.jpg", "decode", jpeg[:len(jpeg) // 3])
  good("06_rgba.png", Image.fromarray(RNG.integers(0, 256, (40, 48, 4), np.uint8), "RGBA"))
  skip("07_bomb.png", "huge", png_header_only(100_000, 100_000))
  good("08_cmyk.jpg", Image.fromarray(photo()).convert("CMYK"))
  skip("09_large.png", "huge", encode(Image.fromarray(RNG.integers(0, 256, (150, 200, 3), np.uint8)), "PNG"))
  good("10_gray16.png", Image.fromarray(RNG.integers(0, 65536, (40, 48), np.uint16)))
  skip("11_tiny.png", "small", encode(Image.fromarray(photo()[:20, :20]), "PNG"))
  good("12_palette.png", Image.fromarray(photo()).quantize(32))
  skip("13_one_pixel.png", "small", encode(Image.fromarray(photo()[:1, :1]), "PNG"))
  (root / "14_rgb16.png").write_bytes(tf.io.encode_png(RNG.integers(0, 65536, (40, 48, 3), np.uint16)).numpy())
  skip("15_noise.jpg", "decode", b"\xff\xd8\xff\xe0" + RNG.bytes(3000))
  good("16_photo.webp", Image.fromarray(photo()))
  skip("17_empty.jpg", "empty", b"")
  good("18_photo.bmp", Image.fromarray(photo()))
  (root / "zz_nested").mkdir()
  good("zz_nested/19_photo.tiff", Image.fromarray(photo()))
  (root / "notes.txt").write_text("not listed: not an image extension")
  return bad


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("messy")
  return root, write_messy_folder(root)


def test_messy_folder_trains_and_counts_skips_per_reason(messy_folder, caplog):
  root, bad = messy_folder
  source = make_source(f"folder:{root}")
  names = [Path(source.name(i)).name for i in range(len(source))]
  assert len(names) == 20 and names[-1] == "19_photo.tiff"
  epochs = 2
  steps = epochs * len(names) // BATCH
  with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    iterator = make_train_iterator(make_config(f"folder:{root}", seed=5))
    batches = [next(iterator) for _ in range(steps)]

  for batch in batches:
    assert batch["target"].shape == (BATCH, HR_CROP, HR_CROP, 3) and batch["input"].shape == (BATCH, 8, 8, 3)
    assert np.isfinite(batch["target"]).all() and batch["target"].min() >= 0 and batch["target"].max() <= 1
  # Over whole epochs every record starts exactly one sample, and a bad record is always followed by a good one,
  # so each bad record is stepped over exactly once per epoch.
  for reason in SKIP_REASONS:
    expected = epochs * sum(1 for r in bad.values() if r == reason)
    assert sum(int(b[f"skipped_{reason}"].sum()) for b in batches) == expected, reason
  assert sum(int(b["skipped"].sum()) for b in batches) == epochs * len(bad) == 18
  for name in bad:
    assert name in caplog.text
  assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_max_image_pixels_comes_from_the_config(messy_folder):
  root, _ = messy_folder
  iterator = make_train_iterator(make_config(f"folder:{root}", seed=5, max_image_pixels=200_000_000))
  batches = [next(iterator) for _ in range(len(sorted_names(root)) // BATCH)]
  # Only the 10^10-pixel bomb is huge now; the 200x150 photo trains.
  assert sum(int(b["skipped_huge"].sum()) for b in batches) == 1


# ---------------------------------------------------------------- held-out split


def write_noise_folder(root: Path, count: int) -> None:
  root.mkdir(parents=True, exist_ok=True)
  for i in range(count):
    Image.fromarray(RNG.integers(0, 256, (40, 48, 3), np.uint8)).save(root / f"img_{i:02d}.png")


def test_holdout_split_is_deterministic_disjoint_and_covers(tmp_path):
  write_noise_folder(tmp_path / "a", 12)
  source = make_source(f"folder:{tmp_path / 'a'}")
  train, held = holdout_split(source, 4)
  assert (len(train), len(held)) == (8, 4)
  train_names = [train.name(i) for i in range(len(train))]
  held_names = [held.name(i) for i in range(len(held))]
  assert not set(train_names) & set(held_names)
  assert sorted(train_names + held_names) == sorted_names(tmp_path / "a")
  assert [train[i] for i in range(len(train))] == train_names  # Records and names stay paired.
  again_train, again_held = holdout_split(make_source(f"folder:{tmp_path / 'a'}"), 4)
  assert [again_held.name(i) for i in range(4)] == held_names
  assert [again_train.name(i) for i in range(8)] == train_names
  # Not simply the first or last files in name order.
  assert held_names not in (sorted_names(tmp_path / "a")[:4], sorted_names(tmp_path / "a")[-4:])

  # The same files elsewhere hold out the same names; one more file moves at most one record across.
  shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
  moved = holdout_split(make_source(f"folder:{tmp_path / 'elsewhere' / 'b'}"), 4)[1]
  assert [Path(moved.name(i)).name for i in range(4)] == [Path(n).name for n in held_names]
  Image.new("RGB", (40, 48)).save(tmp_path / "a" / "extra.png")
  grown = holdout_split(make_source(f"folder:{tmp_path / 'a'}"), 4)[1]
  assert len(set(held_names) & {grown.name(i) for i in range(4)}) >= 3


def test_holdout_split_edges(tmp_path):
  write_noise_folder(tmp_path, 3)
  source = make_source(f"folder:{tmp_path}")
  train, held = holdout_split(source, 0)
  assert train is source and len(held) == 0
  for count in (3, 4, -1):
    with pytest.raises(ValueError, match="eval.holdout"):
      holdout_split(source, count)


def test_training_never_sees_held_out_records(tmp_path):
  write_noise_folder(tmp_path, 10)
  config = make_config(f"folder:{tmp_path}", holdout=3)
  held = eval_source(config)
  assert len(held) == 3 and len(train_source(config)) == 7
  # Make the held-out images recognisable: flat grey, which no crop of noise is.
  for i in range(len(held)):
    Image.new("RGB", (48, 40), (128, 128, 128)).save(held.name(i))

  def flat_crops(config, steps):
    iterator = make_train_iterator(config)
    hrs = np.concatenate([next(iterator)["target"] for _ in range(steps)])
    return int((hrs.std(axis=(1, 2, 3)) == 0).sum())

  assert flat_crops(config, 6) == 0  # 24 samples: over three epochs of the 7 training records.
  # Without the hold-out the same pipeline does meet them: the check above can fail.
  assert flat_crops(make_config(f"folder:{tmp_path}", holdout=0), 5) > 0


def test_eval_source_choices(tmp_path):
  write_noise_folder(tmp_path / "train", 5)
  write_noise_folder(tmp_path / "val", 2)
  train_spec, val_spec = f"folder:{tmp_path / 'train'}", f"folder:{tmp_path / 'val'}"
  assert eval_source(make_config(train_spec)) is None
  assert len(train_source(make_config(train_spec))) == 5
  # eval.data wins: it is evaluated, and the training source is used whole.
  separate = make_config(train_spec, holdout=2, eval_data=val_spec)
  assert [Path(eval_source(separate).name(i)).parent.name for i in range(2)] == ["val", "val"]
  assert len(train_source(separate)) == 5
  with pytest.raises(ValueError, match="eval.holdout"):
    train_source(make_config(train_spec, holdout=5))
