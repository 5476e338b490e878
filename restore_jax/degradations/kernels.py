"""Blur kernels: Gaussian (isotropic or rotated anisotropic), generalized Gaussian, plateau, 2-D sinc, motion.

The first four follow Real-ESRGAN's degradation model (Wang et al. 2021, "Real-ESRGAN: Training Real-World
Blind Super-Resolution with Pure Synthetic Data", section 3.1):
  * Gaussian: k(p) ~ exp(-1/2 p^T S^-1 p), S = R(theta) diag(sx^2, sy^2) R(theta)^T.
  * generalized Gaussian: k(p) ~ exp(-1/2 (p^T S^-1 p)^beta); beta < 1 gives heavier tails, beta > 1 a
    flatter top.
  * plateau: k(p) ~ 1 / (1 + (p^T S^-1 p)^beta).
  * 2-D sinc (circular low-pass, "ringing"): k(p) ~ wc J1(wc |p|) / (2 pi |p|), J1 the first-order Bessel
    function of the first kind, wc the cutoff frequency in radians per pixel (k(0) = wc^2 / (4 pi)).
Every kernel is odd-sized, centred on its middle tap, and normalised to sum to 1. Coordinates: x runs along
columns, y along rows, angles are counter-clockwise from the x axis in that (x, y) frame.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """(x, y) integer offsets from the centre tap of a size x size kernel."""
  if size < 1 or size % 2 == 0:
    raise ValueError(f"Kernel sizes must be odd and positive, got {size}.")
  axis = np.arange(size, dtype=np.float64) - size // 2
  return np.meshgrid(axis, axis)


def _normalised(kernel: np.ndarray) -> np.ndarray:
  return kernel / kernel.sum()


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
  """p^T S^-1 p over the kernel grid, S = R(angle) diag(sigma_x^2, sigma_y^2) R(angle)^T."""
  if sigma_x <= 0 or sigma_y <= 0:
    raise ValueError(f"Kernel sigmas must be positive, got {sigma_x} and {sigma_y}.")
  x, y = _grid(size)
  cos, sin = math.cos(angle), math.sin(angle)
  along = cos * x + sin * y  # Coordinates in the kernel's own (rotated) axes.
  across = -sin * x + cos * y
  return (along / sigma_x) ** 2 + (across / sigma_y) ** 2


def gaussian(size: int, sigma_x: float, sigma_y: float | None = None, angle: float = 0.0) -> np.ndarray:
  """Isotropic (sigma_y None) or anisotropic Gaussian kernel rotated by `angle` radians."""
  q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, angle)
  return _normalised(np.exp(-0.5 * q))


def gaussian_taps(sigma: float, radius: int) -> np.ndarray:
  """1-D sampled Gaussian of 2 * radius + 1 taps summing to 1."""
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  return _normalised(np.exp(-0.5 * (x / sigma) ** 2))


def generalized_gaussian(size: int, sigma_x: float, sigma_y: float, angle: float, beta: float) -> np.ndarray:
  """exp(-1/2 q^beta): beta = 1 is the Gaussian."""
  q = _quadratic_form(size, sigma_x, sigma_y, angle)
  return _normalised(np.exp(-0.5 * q ** beta))


def plateau(size: int, sigma_x: float, sigma_y: float, angle: float, beta: float) -> np.ndarray:
  """1 / (1 + q^beta): a flat top with polynomial tails."""
  q = _quadratic_form(size, sigma_x, sigma_y, angle)
  return _normalised(1.0 / (1.0 + q ** beta))


def sinc(size: int, cutoff: float) -> np.ndarray:
  """Circular low-pass (2-D sinc) kernel with cutoff `cutoff` in radians per pixel (0, pi]."""
  if not 0 < cutoff <= math.pi:
    raise ValueError(f"The sinc cutoff must be in (0, pi], got {cutoff}.")
  x, y = _grid(size)
  radius = np.hypot(x, y)
  safe = np.where(radius == 0, 1.0, radius)
  kernel = cutoff * scipy.special.j1(cutoff * safe) / (2.0 * math.pi * safe)
  kernel[radius == 0] = cutoff ** 2 / (4.0 * math.pi)  # The limit at 0: J1(z) ~ z / 2.
  return _normalised(kernel)


def motion(length: float, angle: float) -> np.ndarray:
  """A straight motion streak of `length` pixels at `angle` radians, antialiased (bilinear splatting).

  The streak is centred on the middle tap, so the image does not shift; the kernel is the smallest odd square
  holding it. A length below 1 is the identity.
  """
  if length < 1:
    return np.ones((1, 1))
  half = length / 2.0
  size = 2 * math.ceil(half + 1) + 1
  centre = size // 2
  count = max(2, int(math.ceil(length * 8)))  # Eight samples per pixel of streak, at segment midpoints.
  t = (np.arange(count) + 0.5) * (length / count) - half
  x = centre + t * math.cos(angle)
  y = centre + t * math.sin(angle)
  x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
  fx, fy = x - x0, y - y0
  kernel = np.zeros((size, size))
  for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                         (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
    np.add.at(kernel, (y0 + dy, x0 + dx), weight)
  return _normalised(kernel)


# Real-ESRGAN's kernel types (its kernel_list names) and how each is drawn, section 3.1 and
# train_realesrgan_x4plus.yml.
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def _shape_beta(rng: np.random.Generator, beta_range: tuple[float, float]) -> float:
  """Real-ESRGAN draws beta below or above 1 with equal chance, uniformly on each side."""
  low, high = beta_range
  if rng.uniform() < 0.5:
    return float(rng.uniform(low, 1.0)) if low < 1.0 else low
  return float(rng.uniform(1.0, high)) if high > 1.0 else high


def random_mixed(rng: np.random.Generator, kind: str, size: int, sigma_range: tuple[float, float],
                 betag_range: tuple[float, float], betap_range: tuple[float, float]) -> np.ndarray:
  """One kernel of Real-ESRGAN's type `kind`: isotropic types draw one sigma and no angle; anisotropic ones
  draw sigma_x, sigma_y independently and an angle in [-pi, pi]."""
  sigma_x = float(rng.uniform(*sigma_range))
  if kind.endswith("aniso"):
    sigma_y = float(rng.uniform(*sigma_range))
    angle = float(rng.uniform(-math.pi, math.pi))
  else:
    sigma_y, angle = sigma_x, 0.0
  if kind in ("iso", "aniso"):
    return gaussian(size, sigma_x, sigma_y, angle)
  if kind.startswith("generalized"):
    return generalized_gaussian(size, sigma_x, sigma_y, angle, _shape_beta(rng, betag_range))
  return plateau(size, sigma_x, sigma_y, angle, _shape_beta(rng, betap_range))


def random_sinc_cutoff(rng: np.random.Generator, size: int) -> float:
  """Real-ESRGAN's cutoff draw for its blur-stage sinc: [pi/3, pi] below size 13, else [pi/5, pi]."""
  low = math.pi / 3 if size < 13 else math.pi / 5
  return float(rng.uniform(low, math.pi))
