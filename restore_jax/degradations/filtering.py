"""2-D filtering of HWC images with a small kernel (up to 21 x 21), fast on one CPU core.

`correlate(img, kernel)` computes out[y, x] = sum_ij kernel[i, j] * img[y + i - r, x + j - r] (what
torch's conv2d and scipy.ndimage.correlate compute; every kernel here is point-symmetric, so it is also the
convolution), with the image extended by reflection about its edge (scipy's "reflect", numpy's "symmetric":
... b a | a b c ... ). Real-ESRGAN pads with torch's "reflect" (edge pixel not repeated); the difference
touches only the outermost kernel-radius pixels.

How: a kernel of numerical rank r is the sum of r outer products u v^T (its SVD); the rank is cut where the
dropped part's absolute sum is below `tolerance`, so the result is within `tolerance` of the exact filter
for images in [0, 1] (1e-5 by default, far below an 8-bit level). Each outer product is a vertical then a
horizontal 1-D pass, done as products with sparse banded matrices (the edge reflection folded into their
indices, so no padded copy is made): k multiply-adds per pixel and pass, in C, on one thread. Gaussian
kernels have rank 1 (found without an SVD); Real-ESRGAN's other kernels have rank 3 to 10, and past a few
passes one FFT of the image (float32, its cost independent of the kernel) is cheaper. The switch follows a cost model measured on
one core (256 x 256 RGB, CPU time, `benchmarks/degradations.py --calibrate-filter`): a rank-1 pair of passes
costs about 0.7 + 0.09 k ms for k taps, the FFT path about 3 ms, so passes are used while
rank * (k + 9) <= 45.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft
import scipy.sparse

TOLERANCE = 1e-5
PASS_BUDGET = 45  # Separable passes while rank * (taps + 9) stays within this (see the module docstring).


def rank_one(kernel: np.ndarray, tolerance: float = TOLERANCE) -> list[tuple[np.ndarray, np.ndarray]] | None:
  """[(column, row)] if kernel is their outer product within `tolerance` (isotropic Gaussians), else None.

  The centre column and row of a separable kernel are its factors up to scale: O(k^2), no SVD needed.
  """
  cy, cx = kernel.shape[0] // 2, kernel.shape[1] // 2
  pivot = kernel[cy, cx]
  if pivot == 0:
    return None
  column, row = kernel[:, cx] / pivot, kernel[cy, :]
  if np.abs(kernel - np.outer(column, row)).sum() > tolerance:
    return None
  return [(column, row)]


def low_rank(kernel: np.ndarray, tolerance: float = TOLERANCE) -> list[tuple[np.ndarray, np.ndarray]]:
  """[(column taps, row taps), ...] whose outer products sum to kernel within `tolerance` (absolute sum)."""
  kernel = np.asarray(kernel, np.float64)
  u, s, vt = np.linalg.svd(kernel)
  approx = np.zeros_like(kernel)
  factors = []
  for i in range(len(s)):
    column, row = u[:, i] * s[i], vt[i]
    factors.append((column, row))
    approx += np.outer(column, row)
    if np.abs(kernel - approx).sum() <= tolerance:
      break
  return factors


@functools.lru_cache(maxsize=1024)
def _reflected(size: int, radius: int) -> np.ndarray:
  """Indices of an axis of `size` extended by `radius` each side, mirrored about the edges (edge repeated)."""
  index = np.mod(np.arange(-radius, size + radius), 2 * size)
  index = np.where(index < size, index, 2 * size - 1 - index)
  index.setflags(write=False)
  return index


def pad(img: np.ndarray, ry: int, rx: int) -> np.ndarray:
  """np.pad(img, ((ry, ry), (rx, rx), (0, 0)), mode="symmetric"), as two gathers (np.pad is slower here)."""
  if ry:
    img = np.take(img, _reflected(img.shape[0], ry), axis=0)
  if rx:
    img = np.take(img, _reflected(img.shape[1], rx), axis=1)
  return img


@functools.lru_cache(maxsize=256)
def _band(size: int, taps: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices, indptr) of a banded operator on an axis of `size` (times `channels` interleaved): output i
  reads the reflected inputs i - r .. i + r, one row (CSR) or column (CSC) per output."""
  sources = _reflected(size, taps // 2)[np.arange(size)[:, None] + np.arange(taps)[None, :]]
  indices = (sources[:, None, :] * channels + np.arange(channels)[None, :, None]).ravel()
  indptr = np.arange(size * channels + 1) * taps
  for array in (indices, indptr):
    array.setflags(write=False)
  return indices, indptr


def _vertical(size: int, columns: list[np.ndarray]) -> scipy.sparse.csr_matrix:
  """(len(columns) * size, size): the vertical pass of every factor, stacked."""
  taps = len(columns[0])
  indices, indptr = _band(size, taps, 1)
  data = np.concatenate([np.tile(c.astype(np.float32), size) for c in columns])
  count = len(columns)
  return scipy.sparse.csr_matrix((data, np.tile(indices, count), np.arange(count * size + 1) * taps),
                                 shape=(count * size, size))


def _horizontal(size: int, channels: int, row: np.ndarray) -> scipy.sparse.csc_matrix:
  """(size * channels, size * channels): the horizontal pass, applied on the right of (h, W * C)."""
  indices, indptr = _band(size, len(row), channels)
  data = np.tile(row.astype(np.float32), size * channels)
  return scipy.sparse.csc_matrix((data, indices, indptr), shape=(size * channels, size * channels))


def correlate_separable(img: np.ndarray, factors: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
  """Correlation with sum_k outer(column_k, row_k): per factor, a vertical then a horizontal 1-D pass."""
  height, width, channels = img.shape
  flat = np.ascontiguousarray(img, np.float32).reshape(height, width * channels)
  vertical = _vertical(height, [column for column, _ in factors]) @ flat
  out = None
  for k, (_, row) in enumerate(factors):
    term = vertical[k * height:(k + 1) * height] @ _horizontal(width, channels, row)
    out = term if out is None else out + term
  return np.asarray(out, np.float32).reshape(height, width, channels)


def correlate_fft(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Correlation via float32 FFTs of the reflected image (exact up to float32 rounding)."""
  height, width = img.shape[:2]
  size_y, size_x = kernel.shape
  ry, rx = size_y // 2, size_x // 2
  padded = pad(img, ry, rx)
  shape = (scipy.fft.next_fast_len(padded.shape[0], real=True),
           scipy.fft.next_fast_len(padded.shape[1], real=True))
  flipped = np.ascontiguousarray(kernel[::-1, ::-1], np.float32)  # Correlation = convolution with the flip.
  spectrum = scipy.fft.rfft2(padded, s=shape, axes=(0, 1))
  spectrum *= scipy.fft.rfft2(flipped, s=shape)[:, :, None]
  full = scipy.fft.irfft2(spectrum, s=shape, axes=(0, 1))
  return np.ascontiguousarray(full[2 * ry:2 * ry + height, 2 * rx:2 * rx + width], np.float32)


def correlate(img: np.ndarray, kernel: np.ndarray, tolerance: float = TOLERANCE) -> np.ndarray:
  """Filters an HWC float32 image with a 2-D kernel (odd sizes), reflected edges; see the module docstring."""
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
    raise ValueError(f"Filter kernels must be 2-D with odd sizes, got shape {kernel.shape}.")
  if kernel.shape == (1, 1):
    return img * np.float32(kernel[0, 0])
  factors = rank_one(kernel, tolerance)
  if factors is None:
    if 2 * (max(kernel.shape) + 9) > PASS_BUDGET:  # Rank 2 or more: no SVD needed to know passes lose.
      return correlate_fft(img, kernel)
    factors = low_rank(kernel, tolerance)
  if len(factors) * (max(kernel.shape) + 9) > PASS_BUDGET:
    return correlate_fft(img, kernel)
  return correlate_separable(img, factors)
