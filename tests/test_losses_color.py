"""The cosine colour loss against hand-computed angles, torch and finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restore_jax.losses import cosine_loss


def _image(*pixels):
  """A (1, 1, W, 3) image from RGB triples."""
  return jnp.asarray([[pixels]], jnp.float32)


def test_orthogonal_colours_give_one_parallel_give_zero():
  np.testing.assert_allclose(cosine_loss(_image((1, 0, 0)), _image((0, 1, 0))), 1.0, atol=1e-7)
  np.testing.assert_allclose(cosine_loss(_image((0, 0, 0.3)), _image((0.8, 0.1, 0))), 1.0, atol=1e-7)
  # Brightness does not matter, only the direction: (0.2, 0.4, 0.1) and twice it.
  np.testing.assert_allclose(cosine_loss(_image((0.2, 0.4, 0.1)), _image((0.4, 0.8, 0.2))), 0.0,
                             atol=1e-7)
  # Opposite directions (possible for unclipped outputs): cos = -1.
  np.testing.assert_allclose(cosine_loss(_image((0.5, -0.5, 0)), _image((-1, 1, 0))), 2.0, atol=1e-7)


def test_worked_two_pixel_example():
  # Pixel 1: (1, 0, 0) vs (1, 1, 0): cos = 1 / sqrt(2).
  # Pixel 2: (1, 2, 2) vs (2, 1, 2): dot 8, norms 3 and 3, cos = 8 / 9.
  # Loss = mean(1 - cos) = ((1 - 0.70711) + (1 - 0.88889)) / 2 = 0.20200.
  pred = jnp.asarray([[[1, 0, 0]], [[1, 2, 2]]], jnp.float32)  # (2, 1, 3): 2x1 pixels
  target = jnp.asarray([[[1, 1, 0]], [[2, 1, 2]]], jnp.float32)
  expected = ((1 - 1 / math.sqrt(2)) + (1 - 8 / 9)) / 2
  np.testing.assert_allclose(cosine_loss(pred, target), expected, rtol=1e-6)


def test_matches_torch_cosine_similarity_with_black_pixels():
  rng = np.random.default_rng(0)
  pred = rng.random((2, 5, 4, 3), dtype=np.float32)
  target = rng.random((2, 5, 4, 3), dtype=np.float32)
  pred[0, 0, 0] = 0.0  # black prediction
  target[0, 1, 1] = 0.0  # black target
  pred[1, 2, 2] = target[1, 2, 2] = 0.0  # both black
  pred[1, 3, 3] = 3e-4  # below eps, not zero
  for eps in (1e-3, 1e-8):
    expected = 1.0 - F.cosine_similarity(torch.from_numpy(pred), torch.from_numpy(target), dim=-1,
                                         eps=eps).mean()
    np.testing.assert_allclose(cosine_loss(pred, target, eps=eps), expected.item(), rtol=1e-6)


def test_gradient_matches_central_differences():
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    pred = rng.random((2, 2, 3, 3))
    target = rng.random((2, 2, 3, 3))
    grad = jax.grad(cosine_loss)(pred, target)
    step = 1e-6
    basis = np.eye(pred.size).reshape(pred.size, *pred.shape) * step
    shifted = np.concatenate([pred + basis, pred - basis])
    values = jax.vmap(lambda p: cosine_loss(p, target))(shifted)
    finite_difference = ((values[:pred.size] - values[pred.size:]) / (2 * step)).reshape(pred.shape)
    assert grad.dtype == jnp.float64
    np.testing.assert_allclose(grad, finite_difference, rtol=1e-6, atol=1e-10)


def test_black_pixels_have_finite_value_and_gradient():
  black, colour = _image((0, 0, 0)), _image((0.2, 0.6, 0.3))
  loss_and_grads = jax.jit(jax.value_and_grad(cosine_loss, argnums=(0, 1)))
  for pred, target in [(black, colour), (colour, black), (black, black)]:
    loss, grads = loss_and_grads(pred, target)
    np.testing.assert_allclose(loss, 1.0)  # no colour to compare: cosine 0
    assert all(np.all(np.isfinite(g)) for g in grads)
  # A black prediction is pulled along the target's direction, with slope 1 / eps.
  _, (grad_pred, _) = loss_and_grads(black, colour)
  unit = np.array([0.2, 0.6, 0.3]) / math.sqrt(0.2**2 + 0.6**2 + 0.3**2)
  np.testing.assert_allclose(grad_pred[0, 0, 0], -unit / 1e-3, rtol=1e-5)


def test_dtype_and_jit():
  pred = jnp.full((2, 4, 4, 3), 0.5, jnp.bfloat16)
  loss = jax.jit(cosine_loss)(pred, pred)
  assert loss.shape == () and loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, 0.0, atol=1e-6)


@pytest.mark.parametrize("pred_shape, target_shape, options, message", [
    ((1, 4, 4, 3), (1, 4, 4, 1), {}, "same shape"),
    ((1, 4, 4, 1), (1, 4, 4, 1), {}, "at least 2 channels"),
    ((1, 4, 4, 3), (1, 4, 4, 3), {"eps": 0.0}, "eps must be > 0"),
])
def test_errors(pred_shape, target_shape, options, message):
  with pytest.raises(ValueError, match=message):
    cosine_loss(jnp.zeros(pred_shape), jnp.zeros(target_shape), **options)
