"""Fréchet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium"), between the restored images of a dataset and their clean targets.

FID fits a Gaussian to the Inception pool3 features (inception.py) of each set and measures
  ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)).
Lower is better; 0 only for identical feature statistics. It is a dataset-level number: one image has no
covariance, and with fewer images than the 2048 feature dimensions the covariances are rank-deficient and the
value is biased upwards (it shrinks as the set grows), so only compare FIDs computed on the same number of
images. Per-image FID does not exist.

Numerics: the distance runs in numpy float64. Tr((S_1 S_2)^(1/2)) is computed as the sum of the square roots of
the eigenvalues of the symmetric PSD matrix S_1^(1/2) S_2 S_1^(1/2), which has the same eigenvalues as S_1 S_2;
unlike a general matrix square root of the non-symmetric product, this never goes complex and needs no
regularising offset for singular covariances.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from restore_jax.perceptual import inception
from restore_jax.perceptual.common import prepare_rgb


def _clean_eigenvalues(eigenvalues: np.ndarray) -> np.ndarray:
  """Eigenvalues of a PSD matrix with round-off removed: those below size * eps * largest are 0 (a rank-deficient
  covariance, e.g. from fewer images than feature dimensions, has exact zeros that eigh returns as +-1e-16)."""
  threshold = len(eigenvalues) * np.finfo(np.float64).eps * max(float(np.max(np.abs(eigenvalues))), 0.0)
  return np.where(eigenvalues > threshold, eigenvalues, 0.0)


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
  """The symmetric PSD square root of a symmetric PSD matrix, float64."""
  matrix = np.asarray(matrix, np.float64)
  eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (eigenvectors * np.sqrt(_clean_eigenvalues(eigenvalues))) @ eigenvectors.T


def trace_sqrt_product(sigma_1: np.ndarray, sigma_2: np.ndarray) -> float:
  """Tr((S_1 S_2)^(1/2)) for covariance matrices S_1, S_2, in float64."""
  root_1 = sqrtm_psd(sigma_1)
  middle = root_1 @ np.asarray(sigma_2, np.float64) @ root_1
  eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
  return float(np.sum(np.sqrt(_clean_eigenvalues(eigenvalues))))


def frechet_distance(mu_1: np.ndarray, sigma_1: np.ndarray, mu_2: np.ndarray, sigma_2: np.ndarray) -> float:
  """Squared Fréchet (2-Wasserstein) distance between N(mu_1, S_1) and N(mu_2, S_2), float64."""
  mu_1, mu_2 = np.asarray(mu_1, np.float64), np.asarray(mu_2, np.float64)
  sigma_1, sigma_2 = np.asarray(sigma_1, np.float64), np.asarray(sigma_2, np.float64)
  if mu_1.shape != mu_2.shape or sigma_1.shape != sigma_2.shape or sigma_1.shape != mu_1.shape * 2:
    raise ValueError(f"frechet_distance needs means (d,) and covariances (d, d) of one d, got {mu_1.shape}, "
                     f"{sigma_1.shape}, {mu_2.shape}, {sigma_2.shape}.")
  difference = mu_1 - mu_2
  return float(difference @ difference + np.trace(sigma_1) + np.trace(sigma_2)
               - 2.0 * trace_sqrt_product(sigma_1, sigma_2))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance (divisor N - 1) of (N, d) features, float64."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"FID needs the features of at least 2 images, got an array of shape {features.shape}.")
  return features.mean(axis=0), np.cov(features, rowvar=False)


@jax.jit
def _resize_for_inception(image: jax.Array) -> jax.Array:
  """One HWC image in [0, 1] -> (299, 299, 3) in [-1, 1]; compiled once per input size."""
  return 2.0 * inception.resize_to_input(image[None])[0] - 1.0


@functools.partial(jax.jit, static_argnames="width_divisor")
def _pool3(variables: dict, batch: jax.Array, width_divisor: int = 1) -> jax.Array:
  return inception.FIDInceptionV3(width_divisor).apply(variables, batch)


def pool3_features(variables: dict, images: jax.Array, *, width_divisor: int = 1) -> jax.Array:
  """NHWC RGB in [0, 1], any size -> (N, 2048) pool3 features of the FID Inception."""
  images = jnp.asarray(images, jnp.float32)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"pool3_features expects NHWC RGB images, got shape {images.shape}.")
  scaled = 2.0 * inception.resize_to_input(images) - 1.0
  return _pool3(variables, scaled, width_divisor=width_divisor)


class FIDAccumulator:
  """Collects the Inception features of restored images and of their clean targets, image by image; result()
  is the FID between the two sets.

  Images are HWC float in [0, 1] (one channel is repeated to RGB), clipped and, unless round_to_uint8=False,
  rounded to 8-bit levels like every other metric here; any size (each is resized to 299x299). The network
  runs on batches of `batch_size` resized images (the last one padded), so it compiles once.
  """

  def __init__(self, variables: dict, *, batch_size: int = 8, round_to_uint8: bool = True, width_divisor: int = 1):
    if batch_size < 1:
      raise ValueError(f"fid: batch_size must be >= 1, got {batch_size}.")
    self._variables = variables
    self._batch_size = batch_size
    self._round = round_to_uint8
    self._width_divisor = width_divisor
    self._pending: dict[str, list[jax.Array]] = {"restored": [], "clean": []}
    self._features: dict[str, list[np.ndarray]] = {"restored": [], "clean": []}

  def add(self, restored, clean) -> None:
    """Adds one restored image and its clean target (they need not be the same size)."""
    for name, image in (("restored", restored), ("clean", clean)):
      rgb = prepare_rgb(image, crop_border=0, round_to_uint8=self._round)
      self._pending[name].append(_resize_for_inception(jnp.asarray(rgb)))
      if len(self._pending[name]) == self._batch_size:
        self._flush(name)

  def __len__(self) -> int:
    """Images added so far (per set)."""
    return sum(len(f) for f in self._features["restored"]) + len(self._pending["restored"])

  def _flush(self, name: str) -> None:
    pending = self._pending[name]
    if not pending:
      return
    batch = jnp.stack(pending + [jnp.zeros_like(pending[0])] * (self._batch_size - len(pending)))
    features = _pool3(self._variables, batch, width_divisor=self._width_divisor)
    self._features[name].append(np.asarray(features[:len(pending)], np.float64))
    self._pending[name] = []

  def features(self) -> tuple[np.ndarray, np.ndarray]:
    """(restored, clean) pool3 features so far, each (N, 2048) float64."""
    for name in self._pending:
      self._flush(name)
    return tuple(np.concatenate(self._features[name]) if self._features[name] else
                 np.zeros((0, 0)) for name in ("restored", "clean"))

  def result(self) -> float:
    """FID between the restored and the clean images added so far (at least 2 of each)."""
    restored, clean = self.features()
    return frechet_distance(*feature_statistics(restored), *feature_statistics(clean))
