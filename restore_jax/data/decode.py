"""Any image record -> float32 HWC RGB in [0, 1].

Training data in the wild holds every PIL mode there is (gray, palette, RGBA,
CMYK JPEGs, 16-bit PNGs) and some files that are simply broken. This module
turns the good ones into the one format the rest of the code expects and
raises `BadImage` for the rest, with a reason the pipeline counts skips by:

  empty    a zero-byte file or record (an interrupted copy or download)
  decode   unreadable, not an image, truncated or otherwise undecodable
  huge     more than `max_pixels` pixels, judged from the header alone, so a
           decompression bomb never reaches memory

`max_pixels` (data.max_image_pixels) applies on top of PIL's own
decompression-bomb limit, which is left as it is for the whole process: PIL
still refuses images of more than twice `PIL.Image.MAX_IMAGE_PIXELS` (and
warns above it). To train on larger images, raise that limit yourself, e.g.
in a module named in config.imports.

16-bit images keep their 16 bits (PIL alone reads 16-bit colour PNG and TIFF
as 8-bit; restore_jax.image_io reads them whole). Transparency is composited
on white (not dropped): a transparent background stored as black RGB would
otherwise appear as black.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from restore_jax import image_io

REASONS = ("decode", "huge", "empty")  # Values of BadImage.reason.
# PIL raises DecompressionBombError beyond twice its MAX_IMAGE_PIXELS
# (89,478,485 in Pillow 13); None keeps that protection.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

_MAX_8BIT = 255.0
_MAX_16BIT = 65535.0


class BadImage(ValueError):
  """A record that cannot be turned into an RGB image.

  `reason` is one of REASONS (the pipeline counts skips by it); the message
  says what exactly was wrong, for the log.
  """

  def __init__(self, message: str, reason: str = "decode"):
    if reason not in REASONS:
      raise ValueError(f"BadImage reason {reason!r} is not one of {REASONS}.")
    super().__init__(message)
    self.reason = reason

  @property
  def kind(self) -> str:
    """The reason under the name the data spec first gave it."""
    return self.reason


def to_rgb_float(record: Any, *, max_pixels: int | None = None) -> np.ndarray:
  """Decodes bytes, a file path or an array into float32 HWC RGB in [0, 1].

  Raises BadImage (reason "huge") for images of more than `max_pixels`
  pixels (None: DEFAULT_MAX_PIXELS) without decoding them.
  """
  max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
  if isinstance(record, np.ndarray) and record.dtype == object:
    record = record.item()
  if isinstance(record, np.ndarray) and record.dtype.kind in "biuf":
    _check_pixels(record.shape[:2][::-1], max_pixels)
    return array_to_rgb_float(record)
  if isinstance(record, (bytes, bytearray, memoryview, np.bytes_)):
    data = bytes(record)
    if not data:
      raise BadImage("empty record (0 bytes)", "empty")
    return _decode(data, max_pixels)
  if isinstance(record, (str, os.PathLike)):
    try:
      size = os.path.getsize(record)
    except OSError as e:
      raise BadImage(f"cannot read file: {e}") from e
    if size == 0:
      raise BadImage("empty file (0 bytes)", "empty")
    return _decode(record, max_pixels)  # PIL reads the header only, first.
  raise BadImage(f"unsupported record type {type(record).__name__}")


def _decode(source: Any, max_pixels: int) -> np.ndarray:
  """Opens lazily (a path or the file's bytes), checks the header's size, then decodes."""
  try:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
      _check_pixels(image.size, max_pixels)
      levels = image_io.read_16bit_color(source, image)
      if levels is not None:
        return array_to_rgb_float(levels)
      image.load()  # Decodes now, so truncated files fail here.
      return pil_to_rgb_float(image)
  except BadImage:
    raise
  except Image.DecompressionBombError as e:
    raise BadImage(f"{e} (PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}; raise it in a module of "
                   "config.imports to read such images)", "huge") from e
  except MemoryError as e:
    raise BadImage("ran out of memory decoding it; lower "
                   "data.max_image_pixels", "huge") from e
  except Exception as e:  # pylint: disable=broad-except  # PIL's plugins raise many types.
    raise BadImage(f"cannot decode image: {type(e).__name__}: {e}") from e


def _check_pixels(size: tuple[int, ...], max_pixels: int) -> None:
  width, height = size
  if width * height > max_pixels:
    raise BadImage(f"{width}x{height} = {width * height} pixels exceeds the "
                   f"limit of {max_pixels} (data.max_image_pixels)", "huge")


def pil_to_rgb_float(image: Image.Image) -> np.ndarray:
  """Converts a PIL image of any mode to float32 HWC RGB in [0, 1]."""
  try:
    image = ImageOps.exif_transpose(image)  # Camera photos stored rotated.
  except Exception:  # pylint: disable=broad-except  # Bad EXIF: keep pixels.
    pass
  mode = image.mode
  if mode.startswith("I;16") or mode == "I":
    # 16-bit PNG/TIFF gray arrives as I;16 (or I, int32, holding 0..65535).
    return array_to_rgb_float(np.asarray(image))
  if mode == "F":
    return array_to_rgb_float(np.asarray(image, np.float32))
  if mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  elif mode in ("LA", "PA", "La", "RGBa"):
    image = image.convert("RGBA")
  elif mode not in ("RGB", "RGBA"):
    image = image.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV, ...
  return array_to_rgb_float(np.asarray(image))


def array_to_rgb_float(array: np.ndarray) -> np.ndarray:
  """HW / HWC arrays -> float32 HWC RGB in [0, 1].

  uint8 is scaled by 1/255; uint16 and other integer types (PIL's 32-bit "I"
  mode holds 16-bit samples) by 1/65535; floats are clipped to [0, 1]. Two
  channels are gray and alpha.
  """
  array = np.asarray(array)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim == 3 and array.shape[-1] == 2:
    array = array[..., [0, 0, 0, 1]]  # Gray and alpha -> RGBA.
  if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
    raise BadImage(f"expected an HW or HWC (C in 1, 3, 4) image, got {array.shape}")
  if min(array.shape[:2]) == 0:
    raise BadImage(f"image has no pixels: shape {array.shape}", "empty")

  if array.dtype == np.uint8:
    image = array.astype(np.float32) / _MAX_8BIT
  elif array.dtype == np.uint16:
    image = array.astype(np.float32) / _MAX_16BIT
  elif array.dtype == np.bool_:
    image = array.astype(np.float32)
  elif array.dtype.kind in "iu":  # PIL mode I (int32) holds 16-bit samples.
    if array.min() < 0 or array.max() > _MAX_16BIT:
      raise BadImage(f"integer image with values outside 0..65535 ({array.dtype})")
    image = array.astype(np.float32) / _MAX_16BIT
  elif array.dtype.kind == "f":
    image = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0)
  else:
    raise BadImage(f"unsupported pixel type {array.dtype}")

  if image.ndim == 2:
    return np.repeat(image[..., None], 3, axis=-1)
  if image.shape[-1] == 4:  # Composite on white.
    alpha = image[..., 3:]
    return image[..., :3] * alpha + (1.0 - alpha)
  return np.ascontiguousarray(image)
