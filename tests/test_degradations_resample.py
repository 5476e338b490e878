"""Resizing (the `resize` and `resize_blur` families, and the realistic chain's resampling) against Pillow and
PyTorch."""

import numpy as np
from PIL import Image
import pytest
import skimage.data
import torch

from restore_jax.degradations import make_degradation, resample

PIL_FILTERS = {"area": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC}


def _pil_resize(img: np.ndarray, height: int, width: int, method: str) -> np.ndarray:
  """Pillow's float ("F" mode) resize, channel by channel."""
  return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c]), "F").resize(
      (width, height), PIL_FILTERS[method])) for c in range(img.shape[2])], axis=-1)


def _torch_resize(img: np.ndarray, height: int, width: int, method: str) -> np.ndarray:
  """PyTorch's F.interpolate as Real-ESRGAN calls it (align_corners=False, no antialiasing)."""
  tensor = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
  options = {} if method == "area" else {"align_corners": False}
  out = torch.nn.functional.interpolate(tensor, size=(height, width), mode=method, **options)
  return out[0].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
  return skimage.data.coffee()[50:87, 100:129].astype(np.float32) / 255.0  # 37 x 29: odd sizes.


@pytest.mark.parametrize("method", list(PIL_FILTERS))
@pytest.mark.parametrize("size", [(12, 9), (9, 14), (50, 71), (37, 10)])
def test_antialiased_resize_matches_pillow(image, method, size):
  np.testing.assert_allclose(resample.resize(image, *size, method), _pil_resize(image, *size, method), atol=1e-6)


@pytest.mark.parametrize("method", list(PIL_FILTERS))
@pytest.mark.parametrize("size", [(12, 9), (9, 14), (50, 71), (37, 10)])
def test_plain_resize_matches_pytorch_interpolate(image, method, size):
  ours = resample.resize(image, *size, method, antialias=False)
  np.testing.assert_allclose(ours, _torch_resize(image, *size, method), atol=1e-5)


@pytest.mark.parametrize("method", list(PIL_FILTERS))
def test_resize_family_downscales_like_pillow(method):
  target = skimage.data.astronaut()[:96, 64:160].astype(np.float32) / 255.0
  out = make_degradation(dict(name="resize", scale=3, method=method))(target, np.random.default_rng(0))["input"]
  np.testing.assert_allclose(out, np.clip(_pil_resize(target, 32, 32, method), 0, 1), atol=1e-6)


def test_resize_blur_is_pillow_down_then_up():
  target = skimage.data.chelsea()[:60, :80].astype(np.float32) / 255.0
  for method in PIL_FILTERS:
    degrade = make_degradation(dict(name="resize_blur", factor=2.5, methods=(method,)))
    out = degrade(target, np.random.default_rng(0))["input"]
    expected = _pil_resize(_pil_resize(target, 24, 32, method), 60, 80, method)  # 60 / 2.5, 80 / 2.5.
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=2e-6)
  # Down and up methods are drawn independently: with two methods all four pairs show up.
  degrade = make_degradation(dict(name="resize_blur", factor=2.0, methods=("area", "bilinear")))
  outputs = {degrade(target, np.random.default_rng(s))["input"].tobytes() for s in range(20)}
  assert len(outputs) == 4


def test_taps_are_cached_read_only_and_normalised():
  taps, weights = resample.resize_taps(40, 10, "bicubic")
  again = resample.resize_taps(40, 10, "bicubic")
  assert again[0] is taps and again[1] is weights
  assert not taps.flags.writeable and not weights.flags.writeable
  for antialias in (True, False):
    for method in PIL_FILTERS:
      np.testing.assert_allclose(resample.resize_weights(37, 11, method, antialias).sum(axis=1), 1.0, atol=1e-6)
