"""Restoring user images: tiled inference against untiled, image I/O against Pillow's own reads, the restore CLI
end to end, and the memory bound on a large image."""

import functools
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data as skdata

from cli import REPO, cli_env
from configs import sr_wgangp
from restore_jax import checkpoint, image_io, models, restore, tiling
from restore_jax.models import RRDBNet
from restore_jax.state import create_gan_state

SCALE = 4


def numpy_filled(shapes, *, gain, seed=0):
  """Arrays in the shapes of `shapes`, drawn with numpy instead of initialisers (nothing to compile): kernels
  N(0, gain^2 / fan_in), random keys key(0), everything else 0."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    if "kernel" in jax.tree_util.keystr(path):
      return jnp.asarray(rng.normal(0.0, gain / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape), leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def random_params(module, input_shape, *, gain):
  return numpy_filled(jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(input_shape))["params"], gain=gain)


def psnr(a, b):
  return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def seam_lines(length, tile, overlap, scale):
  """Output rows (or columns) where one tile ends or the next begins: where a seam would show."""
  starts = tiling.tile_starts(length, tile, overlap)
  return sorted({s * scale for s in starts[1:]} | {(s + tile) * scale - 1 for s in starts[:-1]})


# ---------------------------------------------------------------------------------------------------- tiling


def test_tile_starts_hand_computed():
  assert tiling.tile_starts(48, 48, 8) == [0]
  assert tiling.tile_starts(30, 48, 8) == [0]  # Smaller than a tile: one (padded) tile.
  # 100 px, tile 48, stride <= 24: ceil(52 / 24) = 3 steps of 52 / 3 = 17.3 px, floored.
  assert tiling.tile_starts(100, 48, 24) == [0, 17, 34, 52]
  starts = tiling.tile_starts(1024, 128, 32)
  assert len(starts) == 11 and starts[0] == 0 and starts[-1] == 1024 - 128  # ceil(896 / 96) = 10 steps.
  assert all(0 < b - a <= 96 for a, b in zip(starts, starts[1:]))


def test_tile_shape_shrinks_only_sides_shorter_than_the_tile():
  assert tiling.tile_shape(1000, 1000, 512) == (512, 512)
  assert tiling.tile_shape(20, 26, 512) == (64, 64)  # Rounded up to a multiple of 64.
  assert tiling.tile_shape(100, 600, 512) == (128, 512)
  assert tiling.tile_shape(490, 10, 500) == (500, 64)  # Never more than the tile.


def test_axis_weights_sum_to_one_and_fade_inside_overlaps():
  starts, tile, overlap, scale = [0, 17, 34, 52], 48, 24, 2
  profiles = tiling.axis_weights(starts, tile, overlap, scale)
  total = np.zeros(100 * scale)
  for start, profile in zip(starts, profiles):
    total[start * scale : (start + tile) * scale] += profile
  np.testing.assert_allclose(total, 1.0, atol=1e-6)
  margin = overlap * scale // 4  # A tile's outer quarter of the overlap is not used where a neighbour covers it.
  for k, profile in enumerate(profiles):
    if k > 0:
      assert profile[:margin].max() == 0
    if k + 1 < len(profiles):
      assert profile[-margin:].max() == 0
  assert profiles[0][0] == 1.0 and profiles[-1][-1] == 1.0  # Image borders: the only tile there, full weight.
  # A cross-fade, not a cut: the weight changes by a small step from one pixel to the next.
  assert max(np.abs(np.diff(p)).max() for p in profiles) < 0.15


def small_receptive_field_net(scale):
  """Two 3x3 convolutions at the input resolution (receptive field radius 2 input pixels), then nearest xscale."""
  rng = np.random.default_rng(1)
  k1 = jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 3)), jnp.float32)
  k2 = jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 3)), jnp.float32)

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  @jax.jit
  def apply(x):
    y = x + conv(jnp.tanh(conv(x, k1)), k2)
    return jnp.clip(jnp.repeat(jnp.repeat(y, scale, axis=1), scale, axis=2), 0.0, 1.0)

  return apply


def test_tiled_equals_untiled_when_the_unused_margin_covers_the_receptive_field():
  # Weight is 0 on the outer overlap/4 = 2 input pixels of an inner tile edge, which is the receptive field radius
  # of this net: every pixel that counts saw its whole neighbourhood, so tiling changes nothing but float rounding.
  apply = small_receptive_field_net(2)
  image = np.random.default_rng(0).random((50, 61, 3), dtype=np.float32)
  untiled = np.asarray(apply(image[None]))[0]
  tiled = tiling.restore_tiled(apply, image, scale=2, tile=24, overlap=8)
  assert tiled.shape == (100, 122, 3) and tiled.dtype == np.float32
  np.testing.assert_allclose(tiled, untiled, atol=2e-6)
  batched = tiling.restore_tiled(apply, image, scale=2, tile=24, overlap=8, batch=4)  # 3x3 tiles: last batch padded.
  np.testing.assert_allclose(batched, untiled, atol=2e-6)
  levels = tiling.restore_tiled(apply, image, scale=2, tile=24, overlap=8, out_dtype=np.uint8)
  assert levels.dtype == np.uint8
  assert np.abs(levels.astype(int) - np.rint(untiled * 255)).max() <= 1  # Ties at .5 may round either way.
  deep = tiling.restore_tiled(apply, image, scale=2, tile=24, overlap=8, out_dtype=np.uint16)
  assert deep.dtype == np.uint16 and np.abs(deep / 65535.0 - untiled).max() < 1e-4


def test_image_smaller_than_a_tile_is_padded_and_cropped_back():
  apply = small_receptive_field_net(2)
  image = np.random.default_rng(2).random((10, 30, 3), dtype=np.float32)  # Shorter than the tile, and 1-tile wide.
  untiled = np.asarray(apply(image[None]))[0]
  tiled = tiling.restore_tiled(apply, image, scale=2, tile=24, overlap=8)
  assert tiled.shape == (20, 60, 3)
  # Reflection padding instead of zeros changes only the last 2 rows (the receptive field) next to the padding.
  np.testing.assert_allclose(tiled[: 20 - 2 * 2], untiled[: 20 - 2 * 2], atol=2e-6)
  one_pixel = tiling.restore_tiled(apply, image[:1, :1], scale=2, tile=24, overlap=8)
  assert one_pixel.shape == (2, 2, 3)


@pytest.fixture(scope="module")
def rrdb_and_photo():
  """A tiny random RRDBNet (the tiny recipe's size, predicting a residual over bicubic) and a real photo pair."""
  net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=SCALE, bicubic_residual=True)
  params = random_params(net, (1, 8, 8, 3), gain=0.5)
  apply = jax.jit(lambda x: jnp.clip(net.apply({"params": params}, x), 0.0, 1.0))
  clean = skdata.astronaut()[40:360, 100:484]  # 320 x 384
  degraded = Image.fromarray(clean).resize((384 // SCALE, 320 // SCALE), Image.Resampling.BICUBIC)
  return apply, np.asarray(degraded, np.float32) / 255, clean.astype(np.float32) / 255


def test_tiled_rrdb_matches_untiled_without_seams(rrdb_and_photo):
  # Receptive field of this net: 17 3x3 convs at the input resolution (conv_first, 3 dense blocks x 5, conv_body),
  # then ~1.25 input px of convs after upsampling and 2 px of bicubic: radius ~19 input pixels. The overlap of 24
  # covers it, so tiles agree where they are blended.
  apply, degraded, clean = rrdb_and_photo
  untiled = np.asarray(apply(degraded[None]))[0]
  tiled = tiling.restore_tiled(apply, degraded, scale=SCALE, tile=48, overlap=24)
  assert abs(psnr(tiled, clean) - psnr(untiled, clean)) < 0.1
  rows, cols = seam_lines(80, 48, 24, SCALE), seam_lines(96, 48, 24, SCALE)
  seam = max(np.abs(tiled - untiled)[rows].max(), np.abs(tiled - untiled)[:, cols].max())
  assert seam < 0.5 / 255, f"seam of {seam * 255:.2f} levels along tile borders"
  # The same measure sees the seams of tiles that are only stitched: without an overlap to fade over, the edges
  # where zero padding replaced the neighbours stay in the picture.
  stitched = tiling.restore_tiled(apply, degraded, scale=SCALE, tile=48, overlap=0)
  rows, cols = seam_lines(80, 48, 0, SCALE), seam_lines(96, 48, 0, SCALE)
  assert max(np.abs(stitched - untiled)[rows].max(), np.abs(stitched - untiled)[:, cols].max()) > 10 / 255


def test_self_ensemble_of_an_equivariant_net_is_the_net():
  apply = jax.jit(lambda x: jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))  # Nearest x2 commutes with flips.
  image = np.random.default_rng(3).random((2, 9, 13, 3), dtype=np.float32)
  np.testing.assert_allclose(tiling.self_ensemble(apply)(image), np.asarray(apply(image)), atol=1e-6)


def test_self_ensemble_averages_the_eight_symmetries():
  # A net that moves every pixel one step right (zero in from the left). Undone, its 8 rotated/mirrored copies
  # move the image right, left, down and up, each twice: the ensemble is the mean of the 4 neighbours.
  def shift_right(x):
    x = np.asarray(x)
    return np.concatenate([np.zeros_like(x[:, :, :1]), x[:, :, :-1]], axis=2)

  image = np.random.default_rng(4).random((1, 5, 7, 2), dtype=np.float32)
  padded = np.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = (padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:] + padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1]) / 4
  np.testing.assert_allclose(tiling.self_ensemble(shift_right)(image), expected, atol=1e-6)


def test_tiling_rejects_bad_arguments_with_clear_messages():
  apply = small_receptive_field_net(2)
  image = np.zeros((8, 8, 3), np.float32)
  with pytest.raises(ValueError, match="overlap"):
    tiling.restore_tiled(apply, image, scale=2, tile=16, overlap=16)
  with pytest.raises(ValueError, match="scale"):
    tiling.restore_tiled(apply, image, scale=4, tile=16, overlap=4)  # The net is x2.
  with pytest.raises(ValueError, match="HWC"):
    tiling.restore_tiled(apply, image[None], scale=2, tile=16, overlap=4)


# ---------------------------------------------------------------------------------------------------- image I/O


def png_16bit(path, levels):
  """A 16-bit PNG (RGB, gray+alpha or RGBA) written by hand (PNG spec: IHDR, one zlib IDAT, IEND; filter 0)."""
  color_type = {2: 4, 3: 2, 4: 6}[levels.shape[-1]]
  height, width = levels.shape[:2]

  def chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

  rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in levels)
  header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
  Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                         + chunk(b"IEND", b""))


def png_header(path):
  """(bit depth, colour type) of a PNG file."""
  raw = Path(path).read_bytes()
  return raw[24], raw[25]


def upscale_nearest(rgb, factor=2):
  return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


_RNG = np.random.default_rng(5)
_U8 = lambda *shape: _RNG.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731  # Noise, for lossless formats.


def _photo(mode):
  """A small, smooth photograph (what lossy codecs are made for), in `mode`, 11x9."""
  rgba = np.dstack([skdata.astronaut(), np.linspace(0, 255, 512 * 512).reshape(512, 512).astype(np.uint8)])
  return Image.fromarray(rgba).resize((11, 9), Image.Resampling.BOX).convert(mode)

# name: (Pillow image to save, mode written back, lossless)
MODES = {
    "gray.png": (lambda: Image.fromarray(_U8(9, 11)), "L", True),
    "gray.jpg": (lambda: _photo("L"), "L", False),
    "bilevel.png": (lambda: Image.fromarray(_U8(9, 11) > 127), "L", True),
    "gray16.png": (lambda: Image.fromarray(_RNG.integers(0, 65536, (9, 11), dtype=np.uint16)), "I;16", True),
    "gray16.tif": (lambda: Image.fromarray(_RNG.integers(0, 65536, (9, 11), dtype=np.uint16)), "I;16", True),
    "float.tif": (lambda: Image.fromarray(_RNG.random((9, 11), dtype=np.float32)), "F", True),
    "rgb.png": (lambda: Image.fromarray(_U8(9, 11, 3)), "RGB", True),
    "rgb.jpg": (lambda: _photo("RGB"), "RGB", False),
    "rgb.bmp": (lambda: Image.fromarray(_U8(9, 11, 3)), "RGB", True),
    "rgb.tif": (lambda: Image.fromarray(_U8(9, 11, 3)), "RGB", True),
    "rgb.webp": (lambda: _photo("RGB"), "RGB", False),
    "rgba.png": (lambda: Image.fromarray(_U8(9, 11, 4)), "RGBA", True),
    "rgba.webp": (lambda: _photo("RGBA"), "RGBA", False),
    "gray_alpha.png": (lambda: Image.fromarray(_U8(9, 11, 2)), "LA", True),
    "palette.png": (lambda: Image.fromarray(_U8(9, 11, 3)).quantize(16), "RGB", True),
    "palette_alpha.png": (lambda: _palette_with_transparency(), "RGBA", True),
    "cmyk.jpg": (lambda: _photo("CMYK"), "CMYK", False),
    "cmyk.tif": (lambda: Image.frombytes("CMYK", (11, 9), _U8(9, 11, 4).tobytes()), "CMYK", True),
}


def _palette_with_transparency():
  image = Image.fromarray(_U8(9, 11, 3)).quantize(8)
  image.info["transparency"] = 3
  return image


def pillow_reference(path):
  """What Pillow itself reads: (RGB float, alpha float or None), independent of image_io."""
  image = Image.open(path)
  if image.mode.startswith("I;16"):
    gray = np.asarray(image).astype(np.float32) / 65535
    return np.repeat(gray[..., None], 3, -1), None
  if image.mode == "F":
    return np.repeat(np.clip(np.asarray(image), 0, 1)[..., None], 3, -1), None
  if image.mode in ("RGBA", "LA") or "transparency" in image.info:
    rgba = np.asarray(image.convert("RGBA"), np.float32) / 255
    return rgba[..., :3], rgba[..., 3]
  return np.asarray(image.convert("RGB"), np.float32) / 255, None


@pytest.mark.parametrize("name", sorted(MODES))
def test_read_matches_pillow_and_write_keeps_format_and_mode(name, tmp_path):
  make, written_mode, lossless = MODES[name]
  source = tmp_path / name
  make().save(source)
  rgb, info = image_io.read_image(source)
  expected_rgb, expected_alpha = pillow_reference(source)
  assert rgb.dtype == np.float32 and rgb.shape == (9, 11, 3)
  np.testing.assert_allclose(rgb, expected_rgb, atol=1e-6)
  if expected_alpha is None:
    assert info.alpha is None
  else:
    np.testing.assert_allclose(info.alpha, expected_alpha, atol=1e-6)

  target = tmp_path / ("out_" + name)
  image_io.write_image(target, upscale_nearest(rgb), info)
  written = Image.open(target)
  assert written.format == Image.open(source).format
  assert written.mode == written_mode and written.size == (22, 18)
  back_rgb, _ = pillow_reference(target)
  if lossless:  # Same pixels: a gray image's luma is its gray value (the BT.601 weights sum to 1).
    np.testing.assert_allclose(back_rgb, upscale_nearest(expected_rgb), atol=1e-6)
  else:
    assert psnr(back_rgb, upscale_nearest(expected_rgb)) > 30


def smooth_alpha(height, width):
  """A soft mask well inside [0, 255]: bicubic overshoot never clips, so 8-bit and float resizing agree."""
  y, x = np.mgrid[:height, :width]
  return np.rint(127.5 + 90 * np.sin(x / 3.0) * np.cos(y / 4.0)).astype(np.uint8)


def test_alpha_is_passed_through_and_upscaled_bicubic(tmp_path):
  rgba = np.dstack([_U8(12, 10, 3), smooth_alpha(12, 10)])
  Image.fromarray(rgba).save(tmp_path / "in.png")
  rgb, info = image_io.read_image(tmp_path / "in.png")
  image_io.write_image(tmp_path / "same.png", rgb, info)  # Same size: alpha untouched.
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "same.png")), rgba)
  image_io.write_image(tmp_path / "x4.png", upscale_nearest(rgb, 4), info)
  alpha = np.asarray(Image.open(tmp_path / "x4.png"))[..., 3].astype(int)
  # Pillow's bicubic resize of the 8-bit alpha as the reference.
  reference = np.asarray(Image.fromarray(rgba[..., 3]).resize((40, 48), Image.Resampling.BICUBIC)).astype(int)
  assert np.abs(alpha - reference).max() <= 1


def test_gray_output_is_the_luma_of_the_restored_rgb(tmp_path):
  Image.fromarray(_U8(6, 7)).save(tmp_path / "gray.png")
  _, info = image_io.read_image(tmp_path / "gray.png")
  colourful = _U8(6, 7, 3)
  image_io.write_image(tmp_path / "out.png", colourful.astype(np.float32) / 255, info)
  written = Image.open(tmp_path / "out.png")
  assert written.mode == "L"
  reference = np.asarray(Image.fromarray(colourful).convert("L")).astype(int)  # Pillow's BT.601 conversion.
  assert np.abs(np.asarray(written).astype(int) - reference).max() <= 1


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_color_png_stays_16bit(channels, tmp_path):
  levels = _RNG.integers(0, 65536, (5, 6, channels), dtype=np.uint16)
  png_16bit(tmp_path / "in.png", levels)
  rgb, info = image_io.read_image(tmp_path / "in.png")
  color = levels[..., :1] if channels == 2 else levels[..., :3]
  np.testing.assert_array_equal(rgb, np.broadcast_to(color / np.float32(65535), rgb.shape).astype(np.float32))
  assert info.bits == 16 and (info.alpha is not None) == (channels in (2, 4))
  image_io.write_image(tmp_path / "same.png", rgb, info)  # Same size: every 16-bit level comes back.
  assert png_header(tmp_path / "same.png") == (16, {2: 4, 3: 2, 4: 6}[channels])
  back, back_info = image_io.read_image(tmp_path / "same.png")
  np.testing.assert_array_equal(back, rgb)
  if channels != 3:
    np.testing.assert_array_equal(back_info.alpha, info.alpha)
  image_io.write_image(tmp_path / "x2.png", upscale_nearest(rgb), info)
  assert png_header(tmp_path / "x2.png") == (16, {2: 4, 3: 2, 4: 6}[channels])
  np.testing.assert_array_equal(image_io.read_image(tmp_path / "x2.png")[0], upscale_nearest(rgb))


def test_16bit_color_tiff_stays_16bit(tmp_path):
  levels = _RNG.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
  tifffile.imwrite(tmp_path / "in.tif", levels, photometric="rgb")
  rgb, info = image_io.read_image(tmp_path / "in.tif")
  np.testing.assert_array_equal(np.rint(rgb * 65535).astype(np.uint16), levels)
  image_io.write_image(tmp_path / "out.tif", upscale_nearest(rgb), info)
  np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), upscale_nearest(levels))


def test_exif_orientation_is_applied(tmp_path):
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display.
  Image.fromarray(_U8(4, 10, 3)).save(tmp_path / "camera.jpg", exif=exif)
  rgb, _ = image_io.read_image(tmp_path / "camera.jpg")
  assert rgb.shape == (10, 4, 3)


def test_unreadable_file_raises_image_read_error(tmp_path):
  (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
  with pytest.raises(image_io.ImageReadError, match="broken.png"):
    image_io.read_image(tmp_path / "broken.png")


def test_format_that_cannot_hold_the_mode_falls_back(tmp_path):
  Image.fromarray(_U8(6, 7, 4)).save(tmp_path / "in.png")
  rgb, info = image_io.read_image(tmp_path / "in.png")
  image_io.write_image(tmp_path / "out.jpg", rgb, info)  # JPEG has no alpha: RGB.
  assert Image.open(tmp_path / "out.jpg").mode == "RGB"


# ---------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir as training leaves it: config.json and one checkpoint of the tiny recipe.

  The state holds numpy draws in the shapes create_gan_state gives (its initialisers take minutes to compile on a
  busy 2-core machine).
  """
  config = sr_wgangp.get_config("tiny")
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  shapes = jax.eval_shape(functools.partial(create_gan_state, config, generator, discriminator), jax.random.key(0))
  state = numpy_filled(shapes, gain=0.5, seed=6)
  directory = tmp_path_factory.mktemp("run")
  (directory / "config.json").write_text(json.dumps(config.to_dict(), default=str))
  manager = checkpoint.make_manager(directory / "checkpoints", keep=1)
  checkpoint.save(manager, 4, state, iter(grain.MapDataset.range(4).to_iter_dataset()))
  manager.wait_until_finished()
  manager.close()
  return directory, generator, state.ema_params


def test_restore_cli_on_a_folder_of_mixed_images(workdir, tmp_path):
  directory, generator, ema_params = workdir
  photos = tmp_path / "photos"
  (photos / "sub").mkdir(parents=True)
  Image.fromarray(_U8(20, 26)).save(photos / "gray.png")
  Image.fromarray(np.dstack([_U8(20, 26, 3), smooth_alpha(20, 26)])).save(photos / "alpha.png")
  Image.fromarray(_RNG.integers(0, 65536, (20, 26), dtype=np.uint16)).save(photos / "deep.png")
  photo = skdata.astronaut()[::16, ::16][:24, :30]
  Image.fromarray(photo).save(photos / "sub" / "photo.png")
  (photos / "broken.png").write_bytes(b"not an image")
  (photos / "notes.txt").write_text("not an image either, and not an image's name")
  out = tmp_path / "restored"

  result = subprocess.run(
      [sys.executable, "-m", "restore_jax.restore", "--workdir", str(directory), "--input", str(photos),
       "--output", str(out), "--tile", "16", "--tile-overlap", "8"],
      env=cli_env(1), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Skipped 1 unreadable" in result.stderr and "broken.png" in result.stderr

  expected = {"gray.png": "L", "alpha.png": "RGBA", "deep.png": "I;16", "sub/photo.png": "RGB"}
  for name, mode in expected.items():
    written = Image.open(out / name)
    source = Image.open(photos / name)
    assert written.mode == mode, name
    assert written.size == (source.size[0] * SCALE, source.size[1] * SCALE), name
  assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
      "alpha.png", "deep.png", "gray.png", "photo.png"]
  alpha = np.asarray(Image.open(out / "alpha.png"))[..., 3].astype(int)
  source_alpha = Image.open(photos / "alpha.png").getchannel("A")
  reference = np.asarray(source_alpha.resize((26 * SCALE, 20 * SCALE), Image.Resampling.BICUBIC)).astype(int)
  assert np.abs(alpha - reference).max() <= 1  # Passed through, upscaled bicubic.

  # The EMA generator, applied here directly on the whole image, gives the same picture as the tiled CLI.
  direct = generator.apply({"params": ema_params}, photo[None].astype(np.float32) / 255)[0]
  direct = np.rint(np.clip(np.asarray(direct), 0, 1) * 255)
  assert psnr(np.asarray(Image.open(out / "sub" / "photo.png")) / 255, direct / 255) > 45


def test_restore_plan_never_overwrites_the_input(tmp_path):
  photos = tmp_path / "photos"
  photos.mkdir()
  Image.fromarray(_U8(4, 4, 3)).save(photos / "a.png")
  with pytest.raises(ValueError, match="overwrite"):
    restore.plan(photos, photos)
  with pytest.raises(ValueError, match="overwrite"):
    restore.plan(photos / "a.png", photos / "a.png")
  with pytest.raises(ValueError, match="overwrite"):
    restore.plan(photos / "a.png", photos)  # Into the folder it comes from, under its own name.
  # An output folder inside the input folder: earlier outputs there are not inputs.
  (photos / "out").mkdir()
  Image.fromarray(_U8(4, 4, 3)).save(photos / "out" / "a.png")
  assert restore.plan(photos, photos / "out") == [(photos / "a.png", photos / "out" / "a.png")]
  assert restore.plan(photos / "a.png", tmp_path) == [(photos / "a.png", tmp_path / "a.png")]


def test_restore_cli_reports_a_missing_checkpoint(tmp_path):
  Image.fromarray(_U8(4, 4, 3)).save(tmp_path / "a.png")
  code = restore.main(["--workdir", str(tmp_path / "nowhere"), "--input", str(tmp_path / "a.png"),
                       "--output", str(tmp_path / "b.png")])
  assert code == 2 and not (tmp_path / "b.png").exists()


# ---------------------------------------------------------------------------------------------------- memory


def test_peak_memory_at_the_readmes_setting():
  """README: a 1024x1024 input restored x4 to 4096x4096 in 128-pixel tiles needs little more than its input and
  output arrays. Measured in a fresh process (peak RSS over the RSS before the image existed, glibc's default
  allocator, as a user runs it), against sizes worked out here by hand."""
  sys.path.insert(0, str(REPO / "benchmarks"))
  try:
    import restore_memory  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  mib = 2**20
  input_mib = 1024 * 1024 * 3 * 4 / mib  # float32 RGB: 12 MiB.
  output_mib = 4096 * 4096 * 3 * 1 / mib  # uint8 RGB, as restore writes 8-bit files: 48 MiB.
  float_output_mib = 4096 * 4096 * 3 * 4 / mib  # A whole-image float32 result or accumulator: 192 MiB.
  large = restore_memory.run_child("bicubic", 1024, 128, "default")
  small = restore_memory.run_child("bicubic", 128, 128, "default")  # The same tile: its buffers, not the image's.
  assert large["hwm_reset"] and small["hwm_reset"], "the kernel could not reset the peak-RSS mark"
  # What a 1024x1024 image adds over a 128x128 one through the same tile: its arrays, two strips of partial sums
  # (at most 2 x 64 output rows x 4096 x 3 float32 = 6 MiB) and what the allocator keeps (bounded by 48 MiB).
  growth = large["extra_mb"] - small["extra_mb"]
  assert growth < input_mib + output_mib + 6 + 48, (large, small)
  assert large["extra_mb"] < float_output_mib, (large, small)  # Never the whole image in float.
  assert large["extra_mb"] >= input_mib + output_mib  # The arrays themselves are really there (it measures).
