"""restore_jax.models.conv.conv2d against torch: the forward pass, first derivatives, and the second derivative a
gradient penalty takes (the gradient, with respect to the kernel, of the squared input gradient), for each of its
paths: stride 1 on small and on large images, and a strided 4x4 convolution as space-to-depth, each with every way
of computing the kernel gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from restore_jax.models import conv

CASES = {
    # name: (input NHWC, kernel HWIO, strides, padding ((top, bottom), (left, right)))
    "stride1_small": ((2, 9, 10, 5), (3, 3, 5, 4), (1, 1), ((1, 1), (1, 1))),
    "stride1_large": ((1, 72, 70, 3), (3, 3, 3, 4), (1, 1), ((1, 1), (1, 1))),
    "stride1_fewer_outputs": ((2, 8, 8, 6), (3, 3, 6, 2), (1, 1), ((1, 1), (1, 1))),
    "stride2_4x4": ((2, 12, 14, 3), (4, 4, 3, 6), (2, 2), ((1, 1), (1, 1))),
}


def _jax_derivatives(x, k, r, strides, padding):
  def loss(x, k):
    return jnp.sum(jnp.tanh(conv.conv2d(x, k, strides, padding, implementation="matmul")) * r)

  y = conv.conv2d(x, k, strides, padding, implementation="matmul")
  dx, dk = jax.grad(loss, argnums=(0, 1))(x, k)
  penalty_dk = jax.grad(lambda k: jnp.sum(jax.grad(loss)(x, k) ** 2))(k)
  return [np.asarray(a) for a in (y, dx, dk, penalty_dk)]


def _torch_derivatives(x, k, r, strides, padding):
  (top, bottom), (left, right) = padding
  xt = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
  kt = torch.tensor(k.transpose(3, 2, 0, 1), dtype=torch.float64, requires_grad=True)
  rt = torch.tensor(r.transpose(0, 3, 1, 2), dtype=torch.float64)
  y = F.conv2d(F.pad(xt, (left, right, top, bottom)), kt, stride=strides)
  loss = torch.sum(torch.tanh(y) * rt)
  dx, dk = torch.autograd.grad(loss, (xt, kt), create_graph=True)
  (penalty_dk,) = torch.autograd.grad(torch.sum(dx ** 2), kt)
  nhwc, hwio = (0, 2, 3, 1), (2, 3, 1, 0)
  return [y.detach().numpy().transpose(nhwc), dx.detach().numpy().transpose(nhwc),
          dk.detach().numpy().transpose(hwio), penalty_dk.numpy().transpose(hwio)]


@pytest.mark.parametrize("method", [None, *conv.KERNEL_GRADIENTS])
@pytest.mark.parametrize("name", sorted(CASES))
def test_conv2d_and_its_first_and_second_derivatives_match_torch(name, method, monkeypatch):
  if method is not None:  # Every layer takes this method instead of the one chosen for its shape.
    monkeypatch.setattr(conv, "kernel_gradient_method", lambda *shape: method)
  x_shape, k_shape, strides, padding = CASES[name]
  rng = np.random.default_rng(sorted(CASES).index(name))
  x = rng.normal(size=x_shape).astype(np.float32)
  k = (rng.normal(size=k_shape) / np.sqrt(np.prod(k_shape[:3]))).astype(np.float32)
  out_h = (x_shape[1] + sum(padding[0]) - k_shape[0]) // strides[0] + 1
  out_w = (x_shape[2] + sum(padding[1]) - k_shape[1]) // strides[1] + 1
  r = rng.normal(size=(x_shape[0], out_h, out_w, k_shape[3])).astype(np.float32)
  ours = _jax_derivatives(x, k, r, strides, padding)
  theirs = _torch_derivatives(x, k, r, strides, padding)
  for what, a, b in zip(("output", "input gradient", "kernel gradient", "penalty's kernel gradient"), ours, theirs):
    assert a.shape == b.shape, what
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4 * np.abs(b).max(), err_msg=what)


def test_kernel_gradient_methods_choose_by_shape_and_reject_unknown_names():
  # The choices the step's layers get: thin layers stack their windows, large images use XLA's own gradient,
  # the RRDB trunk's 32x32 layers take one product per tap.
  assert conv.kernel_gradient_method(128 * 128, 3, 64) == "stacked"
  assert conv.kernel_gradient_method(128 * 128, 64, 64) == "native"
  assert conv.kernel_gradient_method(32 * 32, 160, 32) == "per_tap"
  x, g = jnp.ones((1, 4, 4, 2)), jnp.ones((1, 4, 4, 3))
  with pytest.raises(ValueError, match="kernel gradient method"):
    conv._kernel_gradient(x, g, (3, 3, 2, 3), ((1, 1), (1, 1)), method="im2col")
