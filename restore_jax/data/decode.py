"""Any image record -> float32 HWC RGB in [0, 1].

Training data in the wild holds every PIL mode there is (gray, palette, RGBA,
CMYK JPEGs, 16-bit PNGs) and some files that are simply broken. This module
turns the good ones into the one format the rest of the code expects and
raises `BadImage` for the rest, so the pipeline can skip them by reason.

Transparency is composited on white (not dropped): a transparent background
stored as black RGB would otherwise appear as black.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps

_MAX_8BIT = 255.0
_MAX_16BIT = 65535.0


class BadImage(ValueError):
  """A record that cannot be turned into an RGB image; `reason` says why."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def to_rgb_float(record: Any) -> np.ndarray:
  """Decodes bytes, a file path or an array into float32 HWC RGB in [0, 1]."""
  if isinstance(record, np.ndarray) and record.dtype.kind in "biuf":
    return array_to_rgb_float(record)
  if isinstance(record, (bytes, bytearray, memoryview, np.bytes_)):
    data = bytes(record)
  elif isinstance(record, (str, os.PathLike)):
    try:
      with open(record, "rb") as f:
        data = f.read()
    except OSError as e:
      raise BadImage(f"cannot read file: {e}") from e
  elif isinstance(record, np.ndarray) and record.dtype == object:
    return to_rgb_float(record.item())
  else:
    raise BadImage(f"unsupported record type {type(record).__name__}")
  return pil_to_rgb_float(_open(data))


def _open(data: bytes) -> Image.Image:
  if not data:
    raise BadImage("empty file")
  try:
    image = Image.open(io.BytesIO(data))
    image.load()  # Decodes now, so truncated files fail here.
  except Image.DecompressionBombError as e:
    raise BadImage(f"image too large: {e}") from e
  except (OSError, ValueError, SyntaxError, EOFError) as e:
    raise BadImage(f"cannot decode image: {e}") from e
  return image


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
  mode holds 16-bit samples) by 1/65535; floats are clipped to [0, 1].
  """
  array = np.asarray(array)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
    raise BadImage(f"expected an HW or HWC (C in 1, 3, 4) image, got {array.shape}")
  if min(array.shape[:2]) == 0:
    raise BadImage(f"image has no pixels: shape {array.shape}")

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
