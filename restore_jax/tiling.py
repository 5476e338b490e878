"""Restoring images of any size in tiles that overlap, blended without seams, in memory bounded by the tile.

A generator trained on 32x32 crops runs on a 4096x4096 photograph by cutting it into overlapping tiles, restoring
each and cross-fading the overlaps. All tiles of an image have one shape, so the network compiles once: the last tile
of a row or column is shifted inward (the tiles are spread evenly) rather than cut short. A side shorter than the
tile gets a tile side of its length rounded up to a multiple of 64, padded by reflection, so a small image does not
pay for a whole tile and a folder of images compiles a handful of shapes.

Blending. A tile's outer pixels see padding instead of their neighbours, so they are its least accurate ones. Along
each axis a tile's weight is 0 on the outer quarter of the overlap, rises as a raised cosine over the middle half and
is 1 inside (no taper on an image border). Weights are normalised to sum to 1 at every output pixel; every tile row
holds the same columns, so the normalisation is separable (one 1-D profile per axis) and no weight image is kept.
When the unused quarter of the overlap covers the network's receptive field radius, tiled equals untiled up to float
rounding; a narrower overlap leaves differences only where the receptive field reaches past a tile's edge.

Memory. Tiles are restored in raster order and a pixel is written to the output (quantised already when `out_dtype`
is uint8 or uint16) as soon as the last tile covering it is done. Float partial sums are kept only where tiles still
to come overlap: a strip as tall as the overlap of two tile rows across the output's width (two strips while the
next one fills) and one tile's overlapping columns. Peak memory beyond the input and output arrays is one batch of
tiles plus 2 * overlap * scale * output width * channels * 4 bytes: 6 MB for a 4096x4096 output at overlap 16, x4,
against 48 MB for the uint8 output array itself. Nothing grows with the image's height.
"""

from collections.abc import Callable, Iterator

import numpy as np

ApplyFn = Callable[[np.ndarray], np.ndarray]  # NHWC float32 [0, 1] -> NHWC (N, h*scale, w*scale, C) in [0, 1].

_SMALL_SIDE_MULTIPLE = 64  # A side shorter than the tile gets a tile side of its length rounded up to this.
# The eight symmetries of the square (rotations by 0, 90, 180, 270 degrees, each with and without a mirror).
_DIHEDRAL = tuple((turns, mirror) for turns in range(4) for mirror in (False, True))


def restore_tiled(
    apply_fn: ApplyFn,
    image: np.ndarray,
    *,
    scale: int,
    tile: int = 512,
    overlap: int = 32,
    batch: int = 1,
    out_dtype: np.dtype | type = np.float32,
) -> np.ndarray:
  """Restores one HWC image with `apply_fn`, tile by tile.

  Args:
    apply_fn: a batch of NHWC float32 images in [0, 1] -> restored batch, `scale` times larger, in [0, 1].
    image: HWC float in [0, 1].
    scale: output size / input size of `apply_fn` (4 for x4 super-resolution, 1 for same-size restoration).
    tile: tile side in input pixels; 0 restores the whole image in one call (one compilation per image shape).
    overlap: input pixels shared by neighbouring tiles; it should cover the network's receptive field radius.
    batch: tiles per call of `apply_fn` (more fill a GPU better; the last call is padded to the same size).
    out_dtype: float32 (values in [0, 1]), or uint8 / uint16 (values rounded to 8- or 16-bit levels), which keeps
      the output array 4 or 2 times smaller than float.

  Returns:
    The restored image, (H * scale, W * scale, C) in `out_dtype`.
  """
  image = np.asarray(image, np.float32)
  if image.ndim != 3:
    raise ValueError(f"restore_tiled takes one HWC image, got shape {image.shape}; restore a batch image by image.")
  out_dtype = np.dtype(out_dtype)
  if out_dtype not in (np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.uint16)):
    raise ValueError(f"out_dtype must be float32, uint8 or uint16, got {out_dtype}.")
  if scale < 1 or tile < 0 or batch < 1:
    raise ValueError(f"Need scale >= 1, tile >= 0 and batch >= 1; got scale={scale}, tile={tile}, batch={batch}.")
  height, width = image.shape[:2]
  if tile == 0:
    restored = np.asarray(apply_fn(image[None]))
    _check_output(restored, (height, width), scale)
    out = np.empty(restored.shape[1:], out_dtype)
    _store(out, 0, 0, restored[0])
    return out
  if not 0 <= overlap < tile:
    raise ValueError(f"The tile overlap must be at least 0 and less than the tile size; got overlap={overlap}, "
                     f"tile={tile}. Lower --tile-overlap or raise --tile.")

  tile_h, tile_w = tile_shape(height, width, tile)
  padded = _pad_to(image, tile_h, tile_w)
  ys = tile_starts(padded.shape[0], tile_h, overlap)
  xs = tile_starts(padded.shape[1], tile_w, overlap)
  weights_y = axis_weights(ys, tile_h, overlap, scale)
  weights_x = axis_weights(xs, tile_w, overlap, scale)
  tiles = _restored_tiles(apply_fn, padded, ys, xs, (tile_h, tile_w), batch)

  span_h, span_w = tile_h * scale, tile_w * scale  # A restored tile's size.
  padded_width = padded.shape[1] * scale
  out = None
  carry = None  # Partial sums for the top rows of this tile row, left by the row above: (rows, padded_width, C).
  for i, y in enumerate(ys):
    final_rows = (ys[i + 1] - y) * scale if i + 1 < len(ys) else span_h
    next_carry = None
    left = None  # Partial sums for the left columns of this tile, left by the tile before it: (span_h, cols, C).
    for j, x in enumerate(xs):
      restored = next(tiles)
      if out is None:
        _check_output(restored[None], (tile_h, tile_w), scale)
        out = np.empty((height * scale, width * scale, restored.shape[-1]), out_dtype)
      block = np.multiply(restored, weights_y[i][:, None, None])  # In place from here: one tile-sized buffer.
      block *= weights_x[j][None, :, None]
      final_cols = (xs[j + 1] - x) * scale if j + 1 < len(xs) else span_w
      x0 = x * scale
      n_left = 0 if left is None else left.shape[1]
      if left is not None:
        block[:, :n_left] += left
      if carry is not None:
        block[: carry.shape[0], n_left:] += carry[:, x0 + n_left : x0 + span_w]
      _store(out, y * scale, x0, block[:final_rows, :final_cols])
      if final_rows < span_h:
        if next_carry is None:
          next_carry = np.zeros((span_h - final_rows, padded_width, block.shape[-1]), np.float32)
        next_carry[:, x0 : x0 + final_cols] = block[final_rows:, :final_cols]
      left = block[:, final_cols:].copy() if final_cols < span_w else None
    carry = next_carry
  return out


def tile_shape(height: int, width: int, tile: int) -> tuple[int, int]:
  """(rows, cols) of the tiles for an image: `tile`, or less along a side shorter than it.

  A short side gets its length rounded up to a multiple of 64 (at most `tile`), padded by reflection: a small
  image costs at most 63 wasted pixels per side instead of a whole tile, and a folder of images of any sizes still
  compiles at most (tile / 64)^2 shapes.
  """
  def side(length: int) -> int:
    return min(tile, -(-length // _SMALL_SIDE_MULTIPLE) * _SMALL_SIDE_MULTIPLE)

  return side(height), side(width)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
  """Start offsets of equal tiles covering [0, length), neighbours sharing at least `overlap` pixels.

  The fewest tiles that fit, spread evenly from 0 to length - tile, so no tile sticks out and none is cut short.
  """
  if length <= tile:
    return [0]
  stride = tile - overlap
  gaps = -(-(length - tile) // stride)  # ceil: the fewest steps of at most `stride`.
  return [k * (length - tile) // gaps for k in range(gaps + 1)]


def axis_weights(starts: list[int], tile: int, overlap: int, scale: int) -> list[np.ndarray]:
  """One weight profile per tile along an axis (length tile * scale), summing to 1 at every output pixel.

  `starts`, `tile` and `overlap` are in input pixels; the profiles are in output pixels. A side that meets a
  neighbour is 0 for the outer quarter of the overlap and rises as a raised cosine over its middle half; a side
  on the image border is not tapered.
  """
  span, fade = tile * scale, overlap * scale
  margin = fade // 4
  ramp_len = fade - 2 * margin
  ramp = np.sin(0.5 * np.pi * (np.arange(ramp_len) + 0.5) / max(ramp_len, 1)) ** 2
  taper = np.concatenate([np.zeros(margin), ramp]).astype(np.float32)
  profiles = []
  for k in range(len(starts)):
    profile = np.ones(span, np.float32)
    if k > 0:
      profile[: taper.size] = taper
    if k + 1 < len(starts):
      profile[span - taper.size :] = np.minimum(profile[span - taper.size :], taper[::-1])
    profiles.append(profile)
  total = np.zeros(starts[-1] * scale + span, np.float32)
  for start, profile in zip(starts, profiles):
    total[start * scale : start * scale + span] += profile
  # Neighbours share at least `overlap` pixels, so one's zero margin always lies inside the other's positive part.
  assert total.min() > 0, "every output pixel must be covered by a tile with positive weight"
  return [profile / total[start * scale : start * scale + span] for start, profile in zip(starts, profiles)]


def self_ensemble(apply_fn: ApplyFn) -> ApplyFn:
  """x8 self-ensemble (Lim et al. 2017, "EDSR"): restore the 8 rotations/mirrors of the input, undo each on its
  output and average. Wraps `apply_fn`, so it composes with tiling and memory stays bounded by the tile.
  """

  def ensembled(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    variants = [_transform(images, turns, mirror) for turns, mirror in _DIHEDRAL]
    # One call per input shape: square tiles put all 8 variants in one batch; others need two (HxW and WxH).
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, v in enumerate(variants):
      by_shape.setdefault(v.shape, []).append(k)
    total = None
    n = images.shape[0]
    for indices in by_shape.values():
      restored = np.asarray(apply_fn(np.concatenate([variants[k] for k in indices])), np.float32)
      for position, k in enumerate(indices):
        turns, mirror = _DIHEDRAL[k]
        part = _untransform(restored[position * n : (position + 1) * n], turns, mirror)
        total = part.copy() if total is None else total + part
    return total / len(_DIHEDRAL)

  return ensembled


def _transform(images: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
  if mirror:
    images = images[:, :, ::-1]
  return np.rot90(images, turns, axes=(1, 2))


def _untransform(images: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
  images = np.rot90(images, -turns, axes=(1, 2))
  return images[:, :, ::-1] if mirror else images


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Reflect-pads the bottom and right of an image smaller than (height, width), so every tile has one shape."""
  pad_h, pad_w = max(height - image.shape[0], 0), max(width - image.shape[1], 0)
  if pad_h == 0 and pad_w == 0:
    return image
  # np.pad reflects again and again when the pad exceeds the image; a 1-pixel axis can only be repeated.
  mode = "reflect" if min(image.shape[:2]) > 1 else "edge"
  return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


def _restored_tiles(apply_fn: ApplyFn, image: np.ndarray, ys: list[int], xs: list[int], shape: tuple[int, int],
                    batch: int) -> Iterator[np.ndarray]:
  """Restored tiles in raster order, computed `batch` at a time (the last batch padded to the same shape)."""
  positions = [(y, x) for y in ys for x in xs]
  batch = min(batch, len(positions))  # No padding beyond the image's own tile count.
  rows, cols = shape
  for first in range(0, len(positions), batch):
    chunk = positions[first : first + batch]
    inputs = np.zeros((batch, rows, cols, image.shape[-1]), np.float32)
    for k, (y, x) in enumerate(chunk):
      inputs[k] = image[y : y + rows, x : x + cols]
    restored = np.asarray(apply_fn(inputs), np.float32)
    yield from restored[: len(chunk)]


def _check_output(restored: np.ndarray, size: tuple[int, int], scale: int) -> None:
  expected = (size[0] * scale, size[1] * scale)
  if restored.ndim != 4 or tuple(restored.shape[1:3]) != expected:
    raise ValueError(f"The network turned a {size[0]}x{size[1]} input into shape {restored.shape}, not "
                     f"{expected[0]}x{expected[1]} (scale {scale}). Pass the scale the network was trained for.")


def _store(out: np.ndarray, top: int, left: int, values: np.ndarray) -> None:
  """Writes float values in [0, 1] into `out` at (top, left), clipped to its extent and quantised to its dtype."""
  rows = min(values.shape[0], out.shape[0] - top)
  cols = min(values.shape[1], out.shape[1] - left)
  if rows <= 0 or cols <= 0:
    return
  values = np.clip(values[:rows, :cols], 0.0, 1.0)
  if out.dtype != np.float32:
    values *= np.iinfo(out.dtype).max
    np.rint(values, out=values)
  out[top : top + rows, left : left + cols] = values
