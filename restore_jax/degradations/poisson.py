"""Poisson draws for images quantised to 8-bit levels, by inverting a cached table of Poisson CDFs.

Real-ESRGAN's Poisson noise (Wang et al. 2021, section 3.1) first rounds the image to 8-bit levels, so the
Poisson mean of a pixel at level l is l / 255 * peak: one of 256 values. Their CDFs are tabulated once per
peak (float64), and a draw is the smallest count k with CDF(k) >= u for a uniform u: exact inversion,
except that a u below 1e-15 or above 1 - 1e-15 is treated as that bound (a bias of that order). A guide
table (the first candidate k for each 1/1024 of u) makes most draws one lookup, a few a second; the rare
rest (the tails) finish by binary search. About twice as fast as numpy's Poisson generator on one core of
this project's CI machine (benchmarks/degradations.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.stats

LEVELS = 256
BINS = 1024  # Guide-table bins of u.
EDGE = 1e-15  # u is kept in [EDGE, 1 - EDGE]: the CDF table need not reach further into the tails.


@functools.lru_cache(maxsize=16)
def _tables(peak: float) -> tuple[np.ndarray, np.ndarray, int]:
  """(cdf, guide, width): cdf[l * width + k] = P(Poisson(l / 255 * peak) <= k); guide[l * (BINS + 1) + j] =
  the smallest k with cdf >= max(j / BINS, EDGE) (j = BINS: with cdf >= 1 - EDGE)."""
  means = np.arange(LEVELS) / (LEVELS - 1) * peak
  top = means[-1]
  width = int(math.ceil(top + 12 * math.sqrt(top) + 40))  # CDF above 1 - 1e-15 well before this.
  cdf = scipy.stats.poisson.cdf(np.arange(width)[None, :], means[:, None])
  cdf[:, -1] = 1.0
  targets = np.maximum(np.arange(BINS + 1) / BINS, EDGE)
  targets[-1] = 1.0 - EDGE
  guide = np.stack([np.searchsorted(row, targets, side="left") for row in cdf]).astype(np.int16)
  guide = np.minimum(guide, width - 1)
  cdf, guide = cdf.ravel(), guide.ravel()
  for array in (cdf, guide):
    array.setflags(write=False)
  return cdf, guide, width


def counts(levels: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
  """Poisson(levels / 255 * peak) draws, int32, for an integer array of 8-bit levels."""
  cdf, guide, width = _tables(float(peak))
  flat = levels.ravel().astype(np.int32)
  u = rng.random(flat.size)
  bins = (u * BINS).astype(np.int32)
  row = flat * width
  k = guide[flat * (BINS + 1) + bins].astype(np.int32)
  # The answer lies in [guide[bin], guide[bin + 1]] (so a u beyond the table's 1e-15 tails gets its edge).
  pending = np.flatnonzero(cdf[row + k] < u)
  if pending.size:  # Most are one count further.
    k[pending] += 1
    pending = pending[cdf[row[pending] + k[pending]] < u[pending]]
  if pending.size:  # The tails: binary search up to the next guide entry.
    low = k[pending] + 1
    high = guide[flat[pending] * (BINS + 1) + bins[pending] + 1].astype(np.int32)
    low = np.minimum(low, high)
    start, target = row[pending], u[pending]
    while True:
      open_ = low < high
      if not open_.any():
        break
      middle = (low + high) // 2
      below = cdf[start + middle] < target
      low = np.where(open_ & below, middle + 1, low)
      high = np.where(open_ & ~below, middle, high)
    k[pending] = low
  return k.reshape(levels.shape)
