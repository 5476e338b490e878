"""Pixel shuffle ("grain"): pixels swap places within their 5 x 5 neighbourhood; no value is invented.

The write-up "Image Restoration Using Generative Adversarial Networks" distorts Public Figures faces with a
5 x 5 kernel that, for every pixel, randomly switches pixel positions while traversing the image, at a low
and a high rate; the result looks like grain, with no noise added. Its rates are not published.

Vectorised here as follows. The image is cut into 3 x 3 tiles, the tile grid shifted by a random phase
(0..2 pixels on each axis) per sample so tile borders are not fixed; any two pixels of a tile are at most 2
apart on each axis, so every pixel stays inside its own 5 x 5 neighbourhood. In each tile, every pixel is
selected with a probability p, and the selected pixels are rotated one step along a random cycle, so each
of them moves; a lone selected pixel takes a random partner (a swap). p is solved from the tile size so that
each pixel moves with probability exactly `rate` (p + p (1 - p)^(n - 1) = rate for a tile of n pixels).
Distance-1 moves are likelier than distance-2 ones, as in a kernel that picks from nearby pixels.

Presets (the write-up gives no numbers): `low` moves a quarter of the pixels, `high` half. The mean squared
error of a shuffled image is proportional to the rate (each moved pixel adds the squared difference to a
neighbour), so `high` is 10 log10(2) = 3.0 dB worse than `low` in PSNR: the gap between the write-up's own
high- and low-distortion results (37.68 vs 40.67 dB for its best model, 31.66 vs 34.93 dB for L1 +
adversarial). The input PSNR at each preset on this repository's sample photos is in docs/degradations.md.
"""

from __future__ import annotations

import functools

import numpy as np

from restore_jax.degradations.base import Degradation, Options, uniform
from restore_jax.degradations.registry import register

TILE = 3  # Pixels of a 3 x 3 tile are within 2 of each other: inside each one's 5 x 5 neighbourhood.


@functools.lru_cache(maxsize=4096)
def selection_probability(rate: float) -> np.ndarray:
  """p for tiles of n = 0..9 pixels, solving p + p (1 - p)^(n - 1) = rate (n >= 2) by bisection."""
  n = np.arange(TILE * TILE + 1, dtype=np.float64)
  low, high = np.zeros_like(n), np.ones_like(n)
  for _ in range(60):  # The left side increases with p from 0 to 1 (n >= 2).
    mid = 0.5 * (low + high)
    moved = mid + mid * (1.0 - mid) ** np.maximum(n - 1, 0)
    too_many = moved > rate
    high = np.where(too_many, mid, high)
    low = np.where(too_many, low, mid)
  p = 0.5 * (low + high)
  p[n < 2] = 0.0  # A lone pixel cannot move.
  p.setflags(write=False)
  return p


@functools.lru_cache(maxsize=64)
def _tiling(height: int, width: int, phase_y: int, phase_x: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(tiles, valid, size): the flat pixel index in each tile slot (-1 outside the image), which slots are in
  the image, and the pixel count of each tile."""
  tiles_y = (height + phase_y + TILE - 1) // TILE
  tiles_x = (width + phase_x + TILE - 1) // TILE
  grid = np.full((tiles_y * TILE, tiles_x * TILE), -1, np.int32)
  grid[phase_y:phase_y + height, phase_x:phase_x + width] = np.arange(height * width, dtype=np.int32).reshape(
      height, width)
  tiles = grid.reshape(tiles_y, TILE, tiles_x, TILE).transpose(0, 2, 1, 3).reshape(-1, TILE * TILE)
  tiles = np.ascontiguousarray(tiles)
  valid = tiles >= 0
  size = valid.sum(axis=1)
  for array in (tiles, valid, size):
    array.setflags(write=False)
  return tiles, valid, size


def shuffle_sources(height: int, width: int, rate: float, rng: np.random.Generator) -> np.ndarray:
  """(height, width) int array: the flat index of the pixel that lands at each position."""
  phase_y, phase_x = (int(v) for v in rng.integers(0, TILE, size=2))
  tiles, valid, size = _tiling(height, width, phase_y, phase_x)
  draws = rng.random((2,) + tiles.shape, dtype=np.float32)
  selected = valid & (draws[0] < selection_probability(float(rate)).astype(np.float32)[size][:, None])
  count = selected.sum(axis=1)
  lone = np.flatnonzero((count == 1) & (size >= 2))
  if lone.size:  # Give each lone selected pixel a random partner from its tile.
    free = valid[lone] & ~selected[lone]
    partner = np.argmax(np.where(free, draws[1][lone], -1.0), axis=1)
    selected[lone, partner] = True

  # A random cycle through each tile's selected pixels: order the slots by a random key, then every selected
  # slot receives the pixel of the next selected slot in that order (wrapping round).
  order = np.argsort(draws[1], axis=1)
  tile_slots = np.take_along_axis(tiles, order, 1)
  chosen = np.take_along_axis(selected, order, 1)
  following = np.empty(tiles.shape, np.int8)
  nearest = np.full(tiles.shape[0], -1, np.int8)
  for j in range(TILE * TILE - 1, -1, -1):  # Next selected column after j, by a backward scan.
    following[:, j] = nearest
    nearest = np.where(chosen[:, j], np.int8(j), nearest)
  following = np.where(following < 0, nearest[:, None], following)  # Wrap to the first selected one.
  received = np.where(chosen, np.take_along_axis(tile_slots, np.maximum(following, 0), 1), tile_slots)

  in_image = tile_slots >= 0
  sources = np.empty(height * width, np.int32)
  sources[tile_slots[in_image]] = received[in_image]
  return sources.reshape(height, width)


@register("pixel_shuffle")
class PixelShuffle(Degradation):
  """Moves each pixel with probability `rate` within its 5 x 5 neighbourhood; presets `low` and `high`."""

  DEFAULTS = dict(rate=0.25)
  PRESETS = dict(low=dict(rate=0.25), high=dict(rate=0.5))

  def __init__(self, opts: Options):
    self.rate = opts.span("rate", low=0.0, high=1.0)

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width, channels = img.shape
    sources = shuffle_sources(height, width, uniform(rng, self.rate), rng)
    return img.reshape(height * width, channels)[sources.ravel()].reshape(img.shape)
