"""Reading a user's image in whatever format and mode it comes, and writing the restored one back the same way.

The network sees float32 RGB in [0, 1]; everything else about the file is kept aside in an `ImageInfo` and given
back on writing: the format, gray or colour, 8 or 16 bits, the alpha channel (upscaled to the output's size with
bicubic resampling), CMYK, the ICC colour profile. Palette images come back as RGB(A): a restored image has more
colours than the palette. EXIF orientation is applied on reading, so the output is stored upright.

Pillow reads 16-bit colour PNGs and TIFFs as 8-bit, so those two go through TensorFlow's PNG codec and tifffile
(both installed with this package's dependencies), imported only when such a file appears. TensorFlow's encoder
cannot embed an ICC profile: a 16-bit colour PNG loses its profile, with a warning.
"""

import dataclasses
import io
import os
from typing import Any

import numpy as np
from absl import logging
from PIL import Image, ImageOps

# Save options per format. JPEG and WebP at quality 95 (near-lossless; BasicSR's image writer defaults to 95 too).
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
# Modes each format can write, in Pillow's names ("I;16" = 16-bit gray). 16-bit colour is handled apart.
_WRITABLE = {
    "PNG": {"L", "LA", "RGB", "RGBA", "I;16"},
    "JPEG": {"L", "RGB", "CMYK"},
    "BMP": {"L", "RGB"},
    "WEBP": {"RGB", "RGBA"},
    "TIFF": {"L", "LA", "RGB", "RGBA", "CMYK", "I;16", "F"},
}
# ITU-R BT.601 luma weights, the ones Pillow's convert("L") uses: a gray input comes back as the output's luma.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_ROWS_PER_CHUNK = 256  # Full-size float temporaries are converted in bands of rows to keep memory near the arrays.


class ImageReadError(ValueError):
  """A file that is not an image this module can read."""


@dataclasses.dataclass(frozen=True)
class ImageInfo:
  """What `read_image` keeps aside to write the restored image back in the same form.

  Attributes:
    format: Pillow's format name ("PNG", "JPEG", "TIFF", ...).
    mode: the source's mode in Pillow's names ("L", "I;16", "RGBA", "P", ...; "RGB;16" / "RGBA;16" / "LA;16" for
      16-bit colour or gray-and-alpha, which Pillow has no mode for).
    gray: the source had one colour channel: the output is written as gray (the luma of the restored RGB).
    bits: 8 or 16 bits per sample, or 32 for float TIFFs.
    cmyk: the source was CMYK: the output is converted back to CMYK.
    alpha: the alpha channel, float32 HW in [0, 1], or None.
    icc_profile: the embedded colour profile, or None.
    save_options: extra options for Pillow's save (e.g. TIFF compression).
  """

  format: str
  mode: str
  gray: bool = False
  bits: int = 8
  cmyk: bool = False
  alpha: np.ndarray | None = None
  icc_profile: bytes | None = None
  save_options: dict[str, Any] = dataclasses.field(default_factory=dict)


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
  """Reads an image file into float32 HWC RGB in [0, 1] and the `ImageInfo` to write it back the same way."""
  try:
    with Image.open(path) as image:
      if getattr(image, "n_frames", 1) > 1:
        logging.warning("%s has %d frames; only the first is restored.", path, image.n_frames)
      levels = read_16bit_color(path, image)
      if levels is not None:
        return _from_16bit_color(levels, image)
      image.load()  # Decodes now, so a truncated file fails here.
      fmt = image.format or _format_from_suffix(path) or "PNG"
      try:
        image = ImageOps.exif_transpose(image)
      except Exception:  # pylint: disable=broad-except  # A broken EXIF block: keep the pixels as stored.
        pass
      return _from_pil(image, fmt)
  except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    if isinstance(e, ImageReadError):
      raise
    raise ImageReadError(f"Cannot read {path} as an image: {e}") from e


def write_image(path: str | os.PathLike, rgb: np.ndarray, info: ImageInfo) -> None:
  """Writes HWC RGB (float in [0, 1], or uint8 / uint16 levels) in the form `info` describes.

  The format follows the path's suffix when it names one (so `--output out.png` converts), else `info.format`;
  a mode the format cannot hold is reduced (alpha dropped, 16 bits to 8, ...) with a warning.
  """
  rgb = np.asarray(rgb)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ValueError(f"write_image takes an HWC RGB image, got shape {rgb.shape}.")
  fmt = _format_from_suffix(path) or info.format
  mode = _fit_mode(_target_mode(info), fmt, path)
  bits = 16 if mode.endswith("16") else 32 if mode == "F" else 8
  height, width = rgb.shape[:2]
  color = _to_levels(_luma(rgb) if mode.startswith(("L", "I", "F")) else rgb, bits)
  if "A" in mode:
    alpha = _to_levels(_resize_alpha(info.alpha, (height, width)), bits)
    color = np.concatenate([color if color.ndim == 3 else color[..., None], alpha[..., None]], axis=-1)
  if mode in ("RGB;16", "RGBA;16", "LA;16"):
    _write_16bit_color(path, color, fmt, info.icc_profile)
    return
  image = Image.fromarray(color)  # uint8 HW/HW2/HW3/HW4 -> L/LA/RGB/RGBA, uint16 HW -> I;16, float32 HW -> F.
  if mode == "CMYK":
    image = image.convert("CMYK")
  options = dict(_SAVE_OPTIONS.get(fmt, {}))
  options.update(info.save_options if fmt == info.format else {})
  if info.icc_profile and fmt in ("PNG", "JPEG", "TIFF", "WEBP"):
    options["icc_profile"] = info.icc_profile
  image.save(path, fmt, **options)


def _from_pil(image: Image.Image, fmt: str) -> tuple[np.ndarray, ImageInfo]:
  """Pillow image of any mode -> float RGB and the info that brings its mode back."""
  common = dict(format=fmt, mode=image.mode, icc_profile=image.info.get("icc_profile"),
                save_options=_save_options(image, fmt))
  mode = image.mode
  if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    levels = np.asarray(image).astype(np.float32)  # 16-bit samples; Pillow's "I" is int32 holding 0..65535.
    gray = np.clip(levels / 65535.0, 0.0, 1.0)
    return _gray_to_rgb(gray), ImageInfo(gray=True, bits=16, **common)
  if mode == "F":
    gray = np.clip(np.nan_to_num(np.asarray(image, np.float32)), 0.0, 1.0)
    return _gray_to_rgb(gray), ImageInfo(gray=True, bits=32, **common)
  if mode in ("1", "L"):
    return _gray_to_rgb(_unit(image.convert("L"))), ImageInfo(gray=True, **common)
  if mode in ("LA", "La"):
    la = _unit(image.convert("LA"))
    return _gray_to_rgb(la[..., 0]), ImageInfo(gray=True, alpha=la[..., 1].copy(), **common)
  if mode == "CMYK":
    return _unit(image.convert("RGB")), ImageInfo(cmyk=True, **common)
  has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info)
  if has_alpha:
    rgba = _unit(image.convert("RGBA"))
    return np.ascontiguousarray(rgba[..., :3]), ImageInfo(alpha=rgba[..., 3].copy(), **common)
  return _unit(image.convert("RGB")), ImageInfo(**common)


def _target_mode(info: ImageInfo) -> str:
  """The mode to write: the source's channels and depth, with palette and 1-bit sources widened."""
  if info.gray:
    if info.alpha is not None:
      return "LA;16" if info.bits == 16 else "LA"
    return {8: "L", 16: "I;16", 32: "F"}[info.bits]
  if info.cmyk:
    return "CMYK"
  base = "RGBA" if info.alpha is not None else "RGB"
  return base + ";16" if info.bits == 16 else base


def _fit_mode(mode: str, fmt: str, path: Any) -> str:
  """Reduces `mode` until `fmt` can write it, warning about what is lost."""
  if fmt == "PNG" and mode in ("RGB;16", "RGBA;16", "LA;16"):
    return mode
  if fmt == "TIFF" and mode in ("RGB;16", "RGBA;16", "LA;16"):
    return mode
  writable = _WRITABLE.get(fmt)
  if writable is None:  # GIF and other formats: let Pillow convert from RGB(A) on its own.
    return "RGBA" if "A" in mode else "RGB"
  reductions = {"RGB;16": "RGB", "RGBA;16": "RGBA", "LA;16": "LA", "I;16": "L", "F": "I;16", "LA": "L",
                "RGBA": "RGB", "CMYK": "RGB", "L": "RGB"}
  fitted = mode
  while fitted not in writable:
    fitted = reductions[fitted]
  if fitted != mode:
    logging.warning("%s: %s cannot hold mode %s; writing %s instead.", path, fmt, mode, fitted)
  return fitted


def _save_options(image: Image.Image, fmt: str) -> dict[str, Any]:
  if fmt == "TIFF" and image.info.get("compression") not in (None, "raw"):
    return {"compression": image.info["compression"]}
  return {}


def read_16bit_color(source: str | os.PathLike | bytes, image: Image.Image) -> np.ndarray | None:
  """uint16 HWC levels (2, 3 or 4 channels) of a 16-bit colour PNG or TIFF, which Pillow alone reads as 8 bits;
  None for any other image. `source` is the file's path or its bytes, `image` Pillow's lazily opened view of it.

  For readers of training data that only need the pixels (restore_jax.data.decode); `read_image` uses it too.
  """
  if not _is_16bit_color(source, image):
    return None
  fmt = image.format
  if fmt == "PNG":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  # Heavy; only for 16-bit colour PNGs.

    contents = bytes(source) if isinstance(source, (bytes, bytearray)) else tf.io.read_file(os.fspath(source))
    levels = tf.io.decode_png(contents, channels=0, dtype=tf.uint16).numpy()
  else:
    import tifffile  # pylint: disable=g-import-not-at-top

    levels = tifffile.imread(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fspath(source))
    if levels.ndim == 3 and levels.shape[0] in (2, 3, 4) and levels.shape[-1] not in (2, 3, 4):
      levels = np.moveaxis(levels, 0, -1)  # Planar (channel-first) storage.
  if levels.ndim != 3 or levels.shape[-1] not in (2, 3, 4) or levels.dtype != np.uint16:
    raise ImageReadError(f"Cannot read {_describe(source)}: unexpected 16-bit layout {levels.shape} {levels.dtype}.")
  return levels


def _is_16bit_color(source: Any, image: Image.Image) -> bool:
  """True for the 16-bit files with more than one channel that Pillow would read as 8-bit."""
  if image.format == "PNG":
    if isinstance(source, (bytes, bytearray)):
      header = bytes(source[:26])
    else:
      with open(source, "rb") as f:
        header = f.read(26)
    # IHDR is the first chunk: bit depth at byte 24, colour type at byte 25 (PNG spec, section 11.2.2);
    # colour types 2 (RGB), 4 (gray + alpha) and 6 (RGBA).
    return len(header) == 26 and header[24] == 16 and header[25] in (2, 4, 6)
  if image.format == "TIFF":
    bits = image.tag_v2.get(258, (8,))  # BitsPerSample, one entry per sample.
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = image.tag_v2.get(277, 1)  # SamplesPerPixel.
    return samples > 1 and max(bits) == 16
  return False


def _from_16bit_color(levels: np.ndarray, image: Image.Image) -> tuple[np.ndarray, ImageInfo]:
  unit = levels.astype(np.float32) / 65535.0
  channels = unit.shape[-1]
  alpha = unit[..., -1].copy() if channels in (2, 4) else None
  gray = channels == 2
  rgb = _gray_to_rgb(unit[..., 0]) if gray else np.ascontiguousarray(unit[..., :3])
  mode = {2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[channels]
  return rgb, ImageInfo(format=image.format, mode=mode, gray=gray, bits=16, alpha=alpha,
                        icc_profile=image.info.get("icc_profile"))


def _describe(source: Any) -> str:
  return f"an image of {len(source)} bytes" if isinstance(source, (bytes, bytearray)) else str(source)


def _write_16bit_color(path: Any, levels: np.ndarray, fmt: str, icc_profile: bytes | None) -> None:
  if fmt == "PNG":
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    if icc_profile:
      logging.warning("%s: the 16-bit PNG encoder cannot embed the source's ICC profile; it is dropped.", path)
    tf.io.write_file(os.fspath(path), tf.io.encode_png(levels))
  else:
    import tifffile  # pylint: disable=g-import-not-at-top

    photometric = "minisblack" if levels.shape[-1] == 2 else "rgb"
    extrasamples = ("unassalpha",) if levels.shape[-1] in (2, 4) else None
    tifffile.imwrite(os.fspath(path), levels, photometric=photometric, extrasamples=extrasamples,
                     iccprofile=icc_profile)


def _unit(image: Image.Image) -> np.ndarray:
  return np.asarray(image, np.float32) / 255.0


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
  return np.repeat(gray[..., None], 3, axis=-1)


def _luma(rgb: np.ndarray) -> np.ndarray:
  """BT.601 luma of RGB levels or floats, in the input's scale, as float32 HW (computed in bands of rows)."""
  luma = np.empty(rgb.shape[:2], np.float32)
  scale = 1.0 / np.iinfo(rgb.dtype).max if rgb.dtype.kind in "ui" else 1.0
  for top in range(0, rgb.shape[0], _ROWS_PER_CHUNK):
    band = rgb[top : top + _ROWS_PER_CHUNK].astype(np.float32)
    luma[top : top + _ROWS_PER_CHUNK] = (band @ _LUMA) * scale
  return luma


def _to_levels(array: np.ndarray, bits: int) -> np.ndarray:
  """Float in [0, 1] or uint8/uint16 levels -> uint8 (bits 8), uint16 (16) or float32 (32), in bands of rows."""
  if bits == 32:
    return _as_unit_float(array)
  dtype = np.uint8 if bits == 8 else np.uint16
  if array.dtype == dtype:
    return array
  out = np.empty(array.shape, dtype)
  top_level = float(np.iinfo(dtype).max)
  for top in range(0, array.shape[0], _ROWS_PER_CHUNK):
    band = _as_unit_float(array[top : top + _ROWS_PER_CHUNK])
    out[top : top + _ROWS_PER_CHUNK] = np.rint(np.clip(band, 0.0, 1.0) * top_level)
  return out


def _as_unit_float(array: np.ndarray) -> np.ndarray:
  if array.dtype.kind in "ui":
    return array.astype(np.float32) / float(np.iinfo(array.dtype).max)
  return np.asarray(array, np.float32)


def _resize_alpha(alpha: np.ndarray | None, size: tuple[int, int]) -> np.ndarray:
  """The source's alpha at the output's size: bicubic, as the alpha of an upscaled image is usually made."""
  if alpha is None:
    return np.ones(size, np.float32)
  if alpha.shape == size:
    return alpha
  resized = Image.fromarray(np.asarray(alpha, np.float32), "F").resize((size[1], size[0]), Image.Resampling.BICUBIC)
  return np.clip(np.asarray(resized), 0.0, 1.0)


def _format_from_suffix(path: Any) -> str | None:
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  return Image.registered_extensions().get(suffix)
