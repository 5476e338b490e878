"""Blur kernels and filtering against scipy, dm-pix and formulas written out here."""

import math

import dm_pix
import numpy as np
import pytest
import scipy.integrate
import scipy.ndimage
import scipy.optimize
import scipy.special
import scipy.stats
import skimage.data

from restore_jax.degradations import default_config, filtering, kernels, make_degradation


@pytest.fixture(scope="module")
def image() -> np.ndarray:
  return skimage.data.rocket()[200:248, 150:206].astype(np.float32) / 255.0  # 48 x 56.


def _correlate_loop(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """The definition: out[y, x] = sum_ij k[i, j] img[y + i - r, x + j - r], edges mirrored (edge pixel kept)."""
  ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
  padded = np.pad(img.astype(np.float64), ((ry, ry), (rx, rx), (0, 0)), mode="symmetric")
  out = np.zeros(img.shape, np.float64)
  for i in range(kernel.shape[0]):
    for j in range(kernel.shape[1]):
      out += kernel[i, j] * padded[i:i + img.shape[0], j:j + img.shape[1]]
  return out


@pytest.mark.parametrize("kind", ["rank1", "rank3", "full", "asymmetric"])
@pytest.mark.parametrize("size", [3, 9, 21])
def test_correlate_matches_the_definition_and_scipy(image, kind, size):
  rng = np.random.default_rng(size)
  if kind == "rank1":
    kernel = np.outer(rng.random(size), rng.random(size))
  elif kind == "rank3":
    kernel = sum(np.outer(rng.random(size), rng.random(size)) for _ in range(3))
  else:
    kernel = rng.random((size, size))
  if kind == "asymmetric":
    kernel[:, : size // 2] = 0.0  # Not point-symmetric: correlation, not convolution.
  kernel /= kernel.sum()
  ours = filtering.correlate(image, kernel)
  assert ours.dtype == np.float32 and ours.shape == image.shape
  np.testing.assert_allclose(ours, _correlate_loop(image, kernel), atol=2e-5)
  reference = scipy.ndimage.correlate(image.astype(np.float64), kernel[:, :, None], mode="reflect")
  np.testing.assert_allclose(ours, reference, atol=2e-5)
  # Both ways of filtering, whichever `correlate` picked: FFT, and separable passes of the kernel's SVD.
  np.testing.assert_allclose(filtering.correlate_fft(image, kernel), reference, atol=2e-5)
  np.testing.assert_allclose(filtering.correlate_separable(image, filtering.low_rank(kernel)), reference, atol=2e-5)


def test_kernel_wider_than_the_image():
  img = np.random.default_rng(0).random((6, 8, 3)).astype(np.float32)
  kernel = kernels.gaussian(21, 3.0)
  np.testing.assert_allclose(filtering.correlate(img, kernel),
                             scipy.ndimage.correlate(img.astype(np.float64), kernel[:, :, None], mode="reflect"),
                             atol=2e-5)


@pytest.mark.parametrize("sigma", [0.7, 1.5, 3.0])
def test_fixed_gaussian_blur_matches_scipy_gaussian_filter(image, sigma):
  out = make_degradation(dict(name="gaussian_blur", sigma=sigma))(image, np.random.default_rng(0))["input"]
  radius = math.ceil(3 * sigma)  # kernel_size (0, 0): 3 sigma each side.
  reference = scipy.ndimage.gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0), radius=radius,
                                            mode="reflect")
  np.testing.assert_allclose(out, reference, atol=2e-6)
  if sigma != 1.5:
    return
  # dm-pix's gaussian_blur pads with zeros: equal away from the border.
  theirs = np.asarray(dm_pix.gaussian_blur(image, sigma, 2 * radius + 1))
  np.testing.assert_allclose(out[radius:-radius, radius:-radius], theirs[radius:-radius, radius:-radius],
                             atol=2e-6)


def test_random_gaussian_blur_draws_sigma_in_its_range(image):
  degrade = make_degradation(dict(name="gaussian_blur", sigma=(0.5, 2.5), kernel_size=(13, 13)))
  found = []
  for seed in range(4):
    out = degrade(image, np.random.default_rng(seed))["input"]
    # Recover sigma: the scipy Gaussian (same 13-tap window) closest to the output.
    fit = scipy.optimize.minimize_scalar(
        lambda s: np.square(out - scipy.ndimage.gaussian_filter(image, (s, s, 0), radius=6, mode="reflect")).mean(),
        bounds=(0.3, 2.7), method="bounded", options={"xatol": 1e-6})
    assert fit.fun < 1e-11 and 0.5 - 1e-4 <= fit.x <= 2.5 + 1e-4
    found.append(fit.x)
  assert len(set(np.round(found, 3))) == 4  # A new sigma per sample.


def _gaussian_reference(size: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
  """A rotated 2-D normal density sampled on the grid, via scipy.stats (x along columns)."""
  rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  covariance = rotation @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rotation.T
  axis = np.arange(size) - size // 2
  x, y = np.meshgrid(axis, axis)
  density = scipy.stats.multivariate_normal(mean=[0, 0], cov=covariance).pdf(np.stack([x, y], -1))
  return density / density.sum()


@pytest.mark.parametrize("sigma_x, sigma_y, angle", [(2.0, 2.0, 0.0), (3.0, 0.8, 0.0), (3.0, 0.8, 0.6),
                                                     (0.5, 2.5, -2.0)])
def test_gaussian_kernels(sigma_x, sigma_y, angle):
  ours = kernels.gaussian(21, sigma_x, sigma_y, angle)
  np.testing.assert_allclose(ours, _gaussian_reference(21, sigma_x, sigma_y, angle), atol=1e-12)
  if angle == 0.0:  # Axis-aligned: sigma_x along columns, as scipy's (rows, columns) sigmas say.
    impulse = np.zeros((21, 21))
    impulse[10, 10] = 1.0
    spread = scipy.ndimage.gaussian_filter(impulse, (sigma_y, sigma_x), radius=10, mode="constant")
    np.testing.assert_allclose(ours, spread / spread.sum(), atol=1e-12)


def test_anisotropic_blur_filters_with_a_rotated_gaussian(image):
  degrade = make_degradation(dict(name="gaussian_blur", anisotropic_prob=1.0, sigma=(0.5, 3.0),
                                  kernel_size=(15, 15)))
  spreads = []
  for seed in range(3):
    # The response to an impulse is the kernel itself (it is point-symmetric).
    impulse = np.zeros((31, 31, 3), np.float32)
    impulse[15, 15] = 1.0
    kernel = degrade(impulse, np.random.default_rng(seed))["input"][8:23, 8:23, 0].astype(np.float64)
    # It is a rotated Gaussian: fit sigma_x, sigma_y and the angle with scipy.stats' density.
    fit = scipy.optimize.least_squares(
        lambda p: (_gaussian_reference(15, p[0], p[1], p[2]) - kernel).ravel(), x0=(1.5, 1.0, 0.3),
        bounds=((0.3, 0.3, -4.0), (4.0, 4.0, 4.0)))
    sigma_x, sigma_y, _ = fit.x
    spreads.append(abs(sigma_x - sigma_y))
    assert np.abs(fit.fun).max() < 1e-6
    assert 0.5 - 1e-3 <= min(sigma_x, sigma_y) and max(sigma_x, sigma_y) <= 3.0 + 1e-3
    # And the same draw on a photo is that filter.
    out = degrade(image, np.random.default_rng(seed))["input"]
    np.testing.assert_allclose(out, _correlate_loop(image, kernel), atol=2e-5)
  assert max(spreads) > 0.3  # Really anisotropic.


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.5])
def test_generalized_gaussian_and_plateau_formulas(beta):
  sigma_x, sigma_y, angle = 2.0, 1.0, 0.4
  # q = p^T S^-1 p written out with the inverse covariance of the rotated Gaussian.
  rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  inverse = np.linalg.inv(rotation @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rotation.T)
  axis = np.arange(-7, 8, dtype=np.float64)
  x, y = np.meshgrid(axis, axis)
  q = inverse[0, 0] * x * x + 2 * inverse[0, 1] * x * y + inverse[1, 1] * y * y
  generalized = np.exp(-0.5 * q ** beta)
  plateau = 1 / (1 + q ** beta)
  np.testing.assert_allclose(kernels.generalized_gaussian(15, sigma_x, sigma_y, angle, beta),
                             generalized / generalized.sum(), atol=1e-12)
  np.testing.assert_allclose(kernels.plateau(15, sigma_x, sigma_y, angle, beta), plateau / plateau.sum(),
                             atol=1e-12)
  if beta == 1.0:
    np.testing.assert_allclose(kernels.generalized_gaussian(15, sigma_x, sigma_y, angle, 1.0),
                               _gaussian_reference(15, sigma_x, sigma_y, angle), atol=1e-12)


@pytest.mark.parametrize("cutoff", [math.pi / 4, math.pi / 2])
def test_sinc_kernel_is_a_circular_low_pass(cutoff):
  kernel = kernels.sinc(21, cutoff)
  assert kernel[10, 10] == kernel.max() and abs(kernel.sum() - 1) < 1e-12
  np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)
  # Its frequency response: about 1 inside the cutoff radius, about 0 well outside it (with ringing from the
  # 21-tap window), the same in every direction.
  response = np.abs(np.fft.fftshift(np.fft.fft2(kernel, s=(256, 256))))
  freq = np.fft.fftshift(np.fft.fftfreq(256)) * 2 * math.pi
  radius = np.hypot(*np.meshgrid(freq, freq))
  assert abs(response[radius < 0.6 * cutoff].mean() - 1) < 0.1
  assert response[(radius > 1.5 * cutoff) & (radius < math.pi)].mean() < 0.05
  # The unnormalised taps follow wc J1(wc r) / (2 pi r).
  r = np.hypot(*np.meshgrid(np.arange(-10, 11), np.arange(-10, 11)))
  with np.errstate(invalid="ignore", divide="ignore"):
    jinc = np.where(r == 0, cutoff ** 2 / (4 * math.pi), cutoff * scipy.special.j1(cutoff * r) / (2 * math.pi * r))
  np.testing.assert_allclose(kernel, jinc / jinc.sum(), atol=1e-12)


def _streak_reference(length: float, angle: float, size: int) -> np.ndarray:
  """A uniform segment of `length` through the centre, area-splatted onto pixels with a tent (bilinear) weight:
  kernel[y, x] = 1/L integral tent(x - px(t)) tent(y - py(t)) dt, by numerical integration."""
  centre = size // 2
  out = np.zeros((size, size))
  for y in range(size):
    for x in range(size):
      def weight(t, x=x, y=y):
        px, py = centre + t * math.cos(angle), centre + t * math.sin(angle)
        return max(0.0, 1 - abs(x - px)) * max(0.0, 1 - abs(y - py))
      out[y, x] = scipy.integrate.quad(weight, -length / 2, length / 2, limit=200)[0] / length
  return out / out.sum()


@pytest.mark.parametrize("length, degrees", [(5.0, 0.0), (7.5, 90.0), (9.0, 30.0)])
def test_motion_kernel_is_a_streak(length, degrees):
  ours = kernels.motion(length, math.radians(degrees))
  np.testing.assert_allclose(ours, _streak_reference(length, math.radians(degrees), ours.shape[0]), atol=3e-3)


def test_motion_blur_family_on_a_horizontal_streak(image):
  degrade = make_degradation(dict(name="motion_blur", length=5.0, angle=0.0))
  out = degrade(image, np.random.default_rng(0))["input"]
  kernel = _streak_reference(5.0, 0.0, 9)
  np.testing.assert_allclose(out, _correlate_loop(image, kernel), atol=4e-3)


@pytest.mark.parametrize("name", ["generalized_gaussian_blur", "plateau_blur", "sinc_blur", "mixed_blur"])
def test_kernel_families_preserve_flat_images(name):
  """Normalised kernels keep a flat image flat (and in [0, 1])."""
  flat = np.full((24, 24, 3), 0.42, np.float32)
  degrade = make_degradation(default_config(name))
  for seed in range(3):
    np.testing.assert_allclose(degrade(flat, np.random.default_rng(seed))["input"], 0.42, atol=1e-5)


def test_mixed_blur_draws_real_esrgan_kernel_types():
  """Every kernel type of kernel_list shows up, and sizes stay among the odd sizes 7..21."""
  from restore_jax.degradations.blur import MixedKernels  # pylint: disable=import-outside-toplevel
  from restore_jax.degradations.base import Options  # pylint: disable=import-outside-toplevel

  defaults = default_config("mixed_blur")
  mixer = MixedKernels(Options(defaults, "degradation", {k: v for k, v in defaults.items() if k != "name"}))
  rng = np.random.default_rng(0)
  sizes, negative = set(), 0
  for _ in range(300):
    kernel = mixer.sample(rng)
    sizes.add(kernel.shape[0])
    assert abs(kernel.sum() - 1) < 1e-9 and kernel.shape[0] == kernel.shape[1]
    negative += kernel.min() < -1e-6  # Only sinc kernels have negative lobes.
  assert sizes == set(range(7, 22, 2))
  assert 0.05 * 300 < negative < 0.16 * 300  # sinc_prob 0.1 (binomial sd 1.7%).
