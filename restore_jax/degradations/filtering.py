"""2-D filtering of HWC images with a small kernel (up to 21 x 21), fast on one CPU core.

`correlate(img, kernel)` computes out[y, x] = sum_ij kernel[i, j] * img[y + i - r, x + j - r] (what
torch's conv2d and scipy.ndimage.correlate compute; every kernel here is point-symmetric, so it is also the
convolution), with the image extended by reflection about its edge (scipy's "reflect", numpy's "symmetric":
... b a | a b c ... ). Real-ESRGAN pads with torch's "reflect" (edge pixel not repeated); the difference
touches only the outermost kernel-radius pixels.

How: a kernel of numerical rank r is the sum of r outer products u v^T (its SVD), and each is a vertical
then a horizontal 1-D pass; the rank is cut where the dropped part's absolute sum is below `tolerance`, so the
result is within `tolerance` of the exact filter for images in [0, 1] (1e-5 by default, far below an 8-bit
level). Gaussian kernels have rank 1, Real-ESRGAN's other kernels rank 3 to 10; past `max_rank`, an FFT
(its cost does not grow with the rank) is cheaper. Measured on one core of this project's 2-core CI machine,
256 x 256 RGB, 21 x 21 kernel: see benchmarks/degradations.md.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

TOLERANCE = 1e-5
MAX_RANK = 4  # Past this rank, the FFT path is cheaper at 256 px (benchmarks/degradations.md).


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


def _pass(padded: np.ndarray, taps: np.ndarray, axis: int, length: int) -> np.ndarray:
  """1-D correlation along `axis` of an array already padded by len(taps) // 2 on that axis ("valid")."""
  taps = taps.astype(np.float32)
  index = [slice(None)] * padded.ndim
  index[axis] = slice(0, length)
  out = padded[tuple(index)] * taps[0]
  scratch = np.empty_like(out)
  for j in range(1, len(taps)):
    if taps[j] == 0.0:
      continue
    index[axis] = slice(j, j + length)
    np.multiply(padded[tuple(index)], taps[j], out=scratch)
    out += scratch
  return out


def correlate_separable(img: np.ndarray, factors: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
  """Correlation with sum_k outer(column_k, row_k): per factor, a vertical then a horizontal 1-D pass."""
  height, width = img.shape[:2]
  ry, rx = len(factors[0][0]) // 2, len(factors[0][1]) // 2
  padded = pad(img, ry, 0)
  out = None
  for column, row in factors:
    vertical = _pass(padded, column, 0, height) if ry else img * np.float32(column[0])
    wide = pad(vertical, 0, rx)
    term = _pass(wide, row, 1, width) if rx else vertical * np.float32(row[0])
    if out is None:
      out = term
    else:
      out += term
  return out


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


def correlate(img: np.ndarray, kernel: np.ndarray, tolerance: float = TOLERANCE,
              max_rank: int = MAX_RANK) -> np.ndarray:
  """Filters an HWC float32 image with a 2-D kernel (odd sizes), reflected edges; see the module docstring."""
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
    raise ValueError(f"Filter kernels must be 2-D with odd sizes, got shape {kernel.shape}.")
  if kernel.shape == (1, 1):
    return img * np.float32(kernel[0, 0])
  factors = low_rank(kernel, tolerance)
  if len(factors) > max_rank:
    return correlate_fft(img, kernel)
  return correlate_separable(img, factors)
