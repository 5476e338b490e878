"""Drawing damage masks: thin curves (scratches), filled blobs (blotches), rectangles and brush strokes.

Each function draws one shape into a boolean (h, w) mask in place, limited to about `budget` pixels so the
damage family can stop close to the coverage it aims for. Sizes are fractions of the shorter image side,
so a 128 px and a 512 px crop look alike. Everything is vectorised over the pixels of one shape.
"""

from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=256)
def _disk_offsets(squared_radius: int) -> tuple[np.ndarray, np.ndarray]:
  reach = math.isqrt(squared_radius)
  dy, dx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
  inside = dy * dy + dx * dx <= squared_radius
  return dy[inside], dx[inside]


def _disk(radius: float) -> tuple[np.ndarray, np.ndarray]:
  """Integer (dy, dx) offsets within `radius` of the origin (the origin always included)."""
  return _disk_offsets(int(math.floor(max(radius, 0.0) ** 2)))  # Integer offsets: only floor(r^2) matters.


def stamp(mask: np.ndarray, points: np.ndarray, radius: float) -> None:
  """Marks every pixel within `radius` of any of `points` ((n, 2) float (y, x))."""
  height, width = mask.shape
  dy, dx = _disk(radius)
  reach = int(np.abs(dy).max()) + 1
  centres = np.round(points).astype(np.int64)
  near = ((centres[:, 0] > -reach) & (centres[:, 0] < height + reach) & (centres[:, 1] > -reach)
          & (centres[:, 1] < width + reach))
  span = width + 2 * reach
  keys = np.unique((centres[near, 0] + reach) * span + centres[near, 1] + reach)  # Each centre once.
  cy, cx = np.divmod(keys, span)
  ys = (cy[:, None] - reach + dy[None, :]).ravel()
  xs = (cx[:, None] - reach + dx[None, :]).ravel()
  inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
  mask[ys[inside], xs[inside]] = True


def _polyline_points(vertices: np.ndarray, spacing: float) -> np.ndarray:
  """Points every `spacing` pixels or closer along the polyline through `vertices` ((n, 2) (y, x))."""
  pieces = []
  for start, end in zip(vertices[:-1], vertices[1:]):
    count = max(2, int(math.ceil(np.hypot(*(end - start)) / spacing)) + 1)
    t = np.linspace(0.0, 1.0, count)[:, None]
    pieces.append(start + t * (end - start))
  return np.concatenate(pieces)


def scratch(mask: np.ndarray, rng: np.random.Generator, width: float, budget: float) -> None:
  """A thin, gently curved line (a cubic Bezier curve), `width` pixels wide, 30..100% of the image diagonal
  long (shorter when the budget is small)."""
  height, width_px = mask.shape
  diagonal = math.hypot(height, width_px)
  length = min(rng.uniform(0.3, 1.0) * diagonal, budget / width)
  if length < 1:
    return
  start = rng.uniform((0, 0), (height, width_px))
  angle = rng.uniform(0, 2 * math.pi)
  direction = np.array([math.sin(angle), math.cos(angle)])
  normal = np.array([direction[1], -direction[0]])
  bends = rng.normal(0.0, 0.1 * length, size=2)
  control = np.stack([start, start + direction * length / 3 + normal * bends[0],
                      start + direction * 2 * length / 3 + normal * bends[1], start + direction * length])
  count = max(2, int(math.ceil(length * 1.5 / 0.5)))  # The curve is at most ~1.5x its chord here.
  t = np.linspace(0.0, 1.0, count)[:, None]
  points = ((1 - t) ** 3 * control[0] + 3 * (1 - t) ** 2 * t * control[1] + 3 * (1 - t) * t ** 2 * control[2]
            + t ** 3 * control[3])
  stamp(mask, points, width / 2)


def blotch(mask: np.ndarray, rng: np.random.Generator, radius: float, budget: float) -> None:
  """A filled blob: a disk of `radius` whose edge wobbles (a few random harmonics of the angle)."""
  height, width = mask.shape
  radius = min(radius, math.sqrt(budget / math.pi))
  if radius < 0.5:
    return
  cy, cx = rng.uniform((0, 0), (height, width))
  harmonics = np.arange(2, 5)
  amplitude = rng.uniform(0.0, 0.2, size=3)
  phase = rng.uniform(0, 2 * math.pi, size=3)
  reach = int(math.ceil(radius * 1.6)) + 1
  y0, y1 = max(0, int(cy) - reach), min(height, int(cy) + reach + 1)
  x0, x1 = max(0, int(cx) - reach), min(width, int(cx) + reach + 1)
  if y0 >= y1 or x0 >= x1:
    return
  y, x = np.mgrid[y0:y1, x0:x1]
  dy, dx = y + 0.5 - cy, x + 0.5 - cx
  theta = np.arctan2(dy, dx)[..., None]
  edge = radius * (1.0 + (amplitude * np.cos(harmonics * theta + phase)).sum(axis=-1))
  mask[y0:y1, x0:x1] |= np.hypot(dy, dx) <= edge


def hole(mask: np.ndarray, rng: np.random.Generator, size: tuple[float, float], budget: float) -> None:
  """An axis-aligned rectangle, each side a fraction drawn from `size` of the image's side."""
  height, width = mask.shape
  rect_h, rect_w = rng.uniform(*size) * height, rng.uniform(*size) * width
  if rect_h * rect_w > budget:
    shrink = math.sqrt(budget / (rect_h * rect_w))
    rect_h, rect_w = rect_h * shrink, rect_w * shrink
  rect_h, rect_w = max(1, min(height, round(rect_h))), max(1, min(width, round(rect_w)))
  top = int(rng.integers(0, height - rect_h + 1))
  left = int(rng.integers(0, width - rect_w + 1))
  mask[top:top + rect_h, left:left + rect_w] = True


def stroke(mask: np.ndarray, rng: np.random.Generator, width: float, budget: float) -> None:
  """A free-form brush stroke: a polyline of 4..10 vertices turning by random angles, `width` wide, as in
  the free-form masks of Yu et al. 2019 ("Free-Form Image Inpainting with Gated Convolution")."""
  height, width_px = mask.shape
  side = min(height, width_px)
  count = int(rng.integers(4, 11))
  lengths = rng.uniform(0.05, 0.2, size=count - 1) * side
  lengths *= min(1.0, budget / width / max(lengths.sum(), 1e-9))
  angle = rng.uniform(0, 2 * math.pi)
  vertices = [rng.uniform((0, 0), (height, width_px))]
  for length in lengths:
    angle += rng.uniform(-math.pi / 2, math.pi / 2)
    step = np.array([math.sin(angle), math.cos(angle)]) * length
    vertices.append(np.clip(vertices[-1] + step, (0, 0), (height - 1, width_px - 1)))
  points = _polyline_points(np.stack(vertices), max(0.5, width / 4))
  stamp(mask, points, width / 2)
