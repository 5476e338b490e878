"""Bilinear, bicubic and area resizing as two small matrix products, one per axis.

Two conventions, because the degradations follow two sources:
  * antialias=True follows Pillow's `Image.resize` (the `resize` and `resize_blur` families): when shrinking,
    the kernel is stretched by the shrink factor so every input pixel contributes; taps falling outside the
    image are dropped and the rest renormalised; bicubic is Keys' kernel with a = -0.5; "area" is the box
    filter, i.e. exact area averaging.
  * antialias=False follows PyTorch's `F.interpolate(..., align_corners=False)` that Real-ESRGAN's
    degradation model uses (Wang et al. 2021, section 3): no antialiasing, edge pixels repeated, bicubic with
    a = -0.75, and "area" as adaptive average pooling.
Pixel centres sit at half-integers in both: output pixel i samples the input at (i + 0.5) * in / out - 0.5.

The weights depend only on the sizes, so they are cached, as sparse matrices: each output pixel reads 2 to 4
input pixels (or the shrink factor times that, antialiased), so a resize of a 256 x 256 RGB crop is two
sparse products of about a millisecond on one core, with no per-pixel Python. Sparse
products also run on one thread: dense ones go to a multi-threaded BLAS, which on small matrices in busy
input-pipeline processes was three times slower than one thread (benchmarks/degradations.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse

METHODS = ("area", "bilinear", "bicubic")


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys (1981) cubic convolution kernel with parameter a."""
  ax = np.abs(x)
  near = ((a + 2.0) * ax - (a + 3.0)) * ax * ax + 1.0
  far = (((ax - 5.0) * ax + 8.0) * ax - 4.0) * a
  return np.where(ax < 1.0, near, np.where(ax < 2.0, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
  return np.maximum(0.0, 1.0 - np.abs(x))


def _box(x: np.ndarray) -> np.ndarray:
  return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


Taps = tuple[np.ndarray, np.ndarray]  # (out, n) input indices and their weights; weight 0 pads short rows.


def _antialiased(in_size: int, out_size: int, method: str, cubic_a: float) -> Taps:
  """Pillow's resampling taps (its Resample.c precompute_coeffs, rewritten vectorised)."""
  kernel, support = {"area": (_box, 0.5), "bilinear": (_triangle, 1.0),
                     "bicubic": (lambda x: _cubic(x, cubic_a), 2.0)}[method]
  scale = in_size / out_size
  stretch = max(scale, 1.0)
  support *= stretch
  centre = (np.arange(out_size) + 0.5) * scale
  first = np.maximum(np.floor(centre - support + 0.5), 0).astype(np.int64)
  last = np.minimum(np.floor(centre + support + 0.5), in_size).astype(np.int64)
  taps = first[:, None] + np.arange(int((last - first).max()))[None, :]
  inside = taps < last[:, None]
  weights = np.where(inside, kernel((taps - centre[:, None] + 0.5) / stretch), 0.0)
  total = weights.sum(axis=1, keepdims=True)
  weights = np.divide(weights, total, out=weights, where=total != 0)
  return np.minimum(taps, in_size - 1), weights


def _torch_like(in_size: int, out_size: int, method: str, cubic_a: float) -> Taps:
  """PyTorch's F.interpolate taps, align_corners=False, without antialiasing (edge taps clamped)."""
  scale = in_size / out_size
  rows = np.arange(out_size)
  if method == "area":  # Adaptive average pooling.
    first = (rows * in_size) // out_size
    last = -((-(rows + 1) * in_size) // out_size)
    taps = first[:, None] + np.arange(int((last - first).max()))[None, :]
    inside = taps < last[:, None]
    weights = np.where(inside, 1.0 / (last - first)[:, None], 0.0)
    return np.minimum(taps, in_size - 1), weights
  source = (rows + 0.5) * scale - 0.5
  if method == "bilinear":
    source = np.maximum(source, 0.0)
    left = np.floor(source).astype(np.int64)
    frac = (source - left)[:, None]
    taps = np.minimum(left[:, None] + np.arange(2)[None, :], in_size - 1)
    return taps, np.concatenate([1.0 - frac, frac], axis=1)
  left = np.floor(source).astype(np.int64)
  offsets = np.arange(-1, 3)[None, :]
  taps = np.clip(left[:, None] + offsets, 0, in_size - 1)
  return taps, _cubic((source - left)[:, None] - offsets, cubic_a)


@functools.lru_cache(maxsize=1024)
def resize_taps(in_size: int, out_size: int, method: str, antialias: bool = True,
                cubic_a: float | None = None) -> Taps:
  """(taps, weights), each (out_size, n): output pixel i is sum_k weights[i, k] * input[taps[i, k]].

  cubic_a defaults to -0.5 (Pillow) with antialias and -0.75 (PyTorch) without. Cached, read-only.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown resize method {method!r}; choose one of {', '.join(METHODS)}.")
  if in_size < 1 or out_size < 1:
    raise ValueError(f"Cannot resize {in_size} pixels to {out_size}.")
  if cubic_a is None:
    cubic_a = -0.5 if antialias else -0.75
  build = _antialiased if antialias else _torch_like
  taps, weights = build(in_size, out_size, method, cubic_a)
  weights = weights.astype(np.float32)
  for array in (taps, weights):
    array.setflags(write=False)
  return taps, weights


def resize_weights(in_size: int, out_size: int, method: str, antialias: bool = True,
                   cubic_a: float | None = None) -> np.ndarray:
  """The dense (out_size, in_size) float32 matrix resampling one axis (for inspection and tests)."""
  taps, weights = resize_taps(in_size, out_size, method, antialias, cubic_a)
  matrix = np.zeros((out_size, in_size), np.float32)
  np.add.at(matrix, (np.broadcast_to(np.arange(out_size)[:, None], taps.shape), taps), weights)
  return matrix


@functools.lru_cache(maxsize=1024)
def _sparse_operators(in_h: int, in_w: int, height: int, width: int, channels: int, method: str, antialias: bool,
                      cubic_a: float | None) -> tuple[scipy.sparse.csr_matrix | None, scipy.sparse.csc_matrix | None]:
  """(rows, columns): rows @ (H, W*C) resizes the H axis; (h, W*C) @ columns the W axis, channels interleaved."""
  rows = columns = None
  if in_h != height:
    taps, weights = resize_taps(in_h, height, method, antialias, cubic_a)
    indptr = np.arange(height + 1) * taps.shape[1]
    rows = scipy.sparse.csr_matrix((weights.ravel(), taps.ravel(), indptr), shape=(height, in_h))
  if in_w != width:
    taps, weights = resize_taps(in_w, width, method, antialias, cubic_a)
    # Output column o * C + c reads input columns taps[o] * C + c.
    indices = (taps[:, None, :] * channels + np.arange(channels)[None, :, None]).ravel()
    data = np.broadcast_to(weights[:, None, :], (width, channels, taps.shape[1])).ravel()
    indptr = np.arange(width * channels + 1) * taps.shape[1]
    columns = scipy.sparse.csc_matrix((data, indices, indptr), shape=(in_w * channels, width * channels))
  return rows, columns


def resize(img: np.ndarray, height: int, width: int, method: str, antialias: bool = True,
           cubic_a: float | None = None) -> np.ndarray:
  """Resizes an HWC float32 image to (height, width); values are not clipped (bicubic overshoots)."""
  in_h, in_w, channels = img.shape
  rows, columns = _sparse_operators(in_h, in_w, height, width, channels, method, antialias, cubic_a)
  out = np.ascontiguousarray(img, np.float32).reshape(in_h, in_w * channels)
  if rows is not None:
    out = rows @ out
  if columns is not None:
    out = out @ columns
  return np.ascontiguousarray(out, np.float32).reshape(height, width, channels)


def scaled_size(size: int, factor: float) -> int:
  """PyTorch's output length for `scale_factor=factor`: floor(size * factor), at least 1."""
  return max(1, int(math.floor(size * factor)))
