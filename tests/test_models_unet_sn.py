"""Real-ESRGAN's U-Net discriminator with spectral norm: parameter count by hand and against a torch network
written here from the paper's Fig. 6, the power iteration against numpy's SVD, and outputs against torch with
every kernel divided by its exact largest singular value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restore_jax import models
from restore_jax.models import unet_sn

torch = pytest.importorskip("torch")
F = torch.nn.functional

SN_LAYERS = [f"conv{i}" for i in range(1, 9)]


def _random_variables(module, x, seed: int = 0):
  """He-scaled kernels, small random biases, a random power-iteration vector u per layer."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def sample(path, leaf):
    name = path[-1].key
    if name == "kernel":
      value = np.sqrt(2.0 / np.prod(leaf.shape[:-1])) * rng.standard_normal(leaf.shape)
    elif name.endswith("/sigma"):
      value = np.ones(leaf.shape)
    elif name.endswith("/u"):
      value = rng.standard_normal(leaf.shape)
    else:
      value = 0.1 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def _largest_singular_value(kernel) -> float:
  """The spectral norm of a conv kernel seen as a matrix from its (kh * kw * in) inputs to its outputs."""
  kernel = np.asarray(kernel, np.float64)
  return float(np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0])


def _stats(variables, layer: str):
  return variables["batch_stats"][f"{layer}_sn"]


class TorchUNetDiscriminator(torch.nn.Module):
  """Fig. 6 of Real-ESRGAN with plain convs (spectral normalisation is applied to the weights before loading):
  3x3 conv; three 4x4 stride-2 convs to 2, 4, 8 x num_feat; three (bilinear x2, 3x3 conv, + skip); two 3x3
  convs; a 3x3 conv to one channel. Only the first and last convs have biases. Leaky ReLU 0.2."""

  def __init__(self, in_ch: int, nf: int, skip_connection: bool = True):
    super().__init__()
    conv = torch.nn.Conv2d
    self.skip_connection = skip_connection
    self.conv0 = conv(in_ch, nf, 3, 1, 1)
    self.conv1 = conv(nf, nf * 2, 4, 2, 1, bias=False)
    self.conv2 = conv(nf * 2, nf * 4, 4, 2, 1, bias=False)
    self.conv3 = conv(nf * 4, nf * 8, 4, 2, 1, bias=False)
    self.conv4 = conv(nf * 8, nf * 4, 3, 1, 1, bias=False)
    self.conv5 = conv(nf * 4, nf * 2, 3, 1, 1, bias=False)
    self.conv6 = conv(nf * 2, nf, 3, 1, 1, bias=False)
    self.conv7 = conv(nf, nf, 3, 1, 1, bias=False)
    self.conv8 = conv(nf, nf, 3, 1, 1, bias=False)
    self.conv9 = conv(nf, 1, 3, 1, 1)

  def forward(self, x):
    act = lambda h: F.leaky_relu(h, 0.2)
    up = lambda h: F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
    x0 = act(self.conv0(x))
    x1 = act(self.conv1(x0))
    x2 = act(self.conv2(x1))
    x3 = act(self.conv3(x2))
    h = x3
    for conv, skip in ((self.conv4, x2), (self.conv5, x1), (self.conv6, x0)):
      h = act(conv(up(h)))
      if self.skip_connection:
        h = h + skip
    return self.conv9(act(self.conv8(act(self.conv7(h)))))


def test_full_size_parameter_count_by_hand_and_against_torch():
  nf = 64
  hand_count = (
      3 * 3 * 3 * nf + nf  # conv0, with bias, no spectral norm.
      + 16 * nf * 2 * nf + 16 * 2 * nf * 4 * nf + 16 * 4 * nf * 8 * nf  # conv1-3: 4x4, no bias.
      + 9 * 8 * nf * 4 * nf + 9 * 4 * nf * 2 * nf + 9 * 2 * nf * nf  # conv4-6: 3x3 back up.
      + 2 * 9 * nf * nf  # conv7, conv8.
      + 9 * nf + 1)  # conv9, with bias.
  assert hand_count == 4_376_897
  net = unet_sn.UNetDiscriminatorSN()
  variables = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert sum(leaf.size for leaf in jax.tree.leaves(variables["params"])) == hand_count
  with torch.device("meta"):
    reference = TorchUNetDiscriminator(3, nf)
  assert sum(p.numel() for p in reference.parameters()) == hand_count
  # BasicSR's layer names, and each torch weight's shape is the Flax kernel's transposed.
  for name, param in reference.named_parameters():
    layer, kind = name.split(".")
    leaf = variables["params"][layer]["kernel" if kind == "weight" else "bias"]
    expected = tuple(param.shape) if kind == "bias" else tuple(param.shape[i] for i in (2, 3, 1, 0))
    assert leaf.shape == expected, name
  # One power-iteration vector (and the last sigma) per normalised conv, in batch_stats.
  assert sorted(variables["batch_stats"]) == [f"{layer}_sn" for layer in SN_LAYERS]
  assert variables["batch_stats"]["conv3_sn"]["conv3/kernel/u"].shape == (1, 8 * nf)


@pytest.fixture(scope="module")
def tiny_sn():
  """num_feat 4 on 16 px: one jitted train step and one eval apply, plus the state after 200 train calls."""
  net = unet_sn.UNetDiscriminatorSN(num_feat=4)
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  variables = _random_variables(net, x)
  train = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats", "intermediates"]))
  evaluate = jax.jit(lambda v, x: net.apply(v, x, mutable=["batch_stats"]))
  converged = variables
  for _ in range(200):
    _, state = train(converged, x)
    converged = {"params": variables["params"], "batch_stats": state["batch_stats"]}
  return net, variables, converged, x, train, evaluate


def test_u_moves_only_in_train_mode(tiny_sn):
  _, variables, _, x, train, evaluate = tiny_sn
  _, eval_state = evaluate(variables, x)
  _, train_state = train(variables, x)
  for layer in SN_LAYERS:
    u = f"{layer}/kernel/u"
    np.testing.assert_array_equal(np.asarray(_stats(eval_state, layer)[u]), np.asarray(_stats(variables, layer)[u]))
    assert np.abs(np.asarray(_stats(train_state, layer)[u]) - np.asarray(_stats(variables, layer)[u])).max() > 1e-3


def test_power_iteration_finds_the_largest_singular_value(tiny_sn):
  """After enough train-mode calls the stored sigma is numpy's largest singular value of the kernel, so the
  normalised kernel's spectral norm is 1; a single iteration from a random u is well off."""
  _, variables, converged, _, _, _ = tiny_sn
  far = 0
  for layer in SN_LAYERS:
    kernel = variables["params"][layer]["kernel"]
    exact = _largest_singular_value(kernel)
    sigma = float(_stats(converged, layer)[f"{layer}/kernel/sigma"])
    np.testing.assert_allclose(sigma, exact, rtol=1e-4, err_msg=layer)
    np.testing.assert_allclose(_largest_singular_value(np.asarray(kernel) / sigma), 1.0, rtol=1e-4)
    far += abs(float(_stats(variables, layer)[f"{layer}/kernel/sigma"]) - exact) > 0.1 * exact
  assert far == len(SN_LAYERS)  # The initial sigma (1) was not already right.


def test_matches_torch_reference_with_exactly_normalised_weights(tiny_sn):
  _, variables, converged, x, _, evaluate = tiny_sn
  logits, _ = evaluate(converged, x)
  reference = TorchUNetDiscriminator(3, 4).eval()
  state = {}
  for name, param in reference.named_parameters():
    layer, kind = name.split(".")
    if kind == "bias":
      state[name] = torch.from_numpy(np.array(variables["params"][layer]["bias"]))
      continue
    kernel = np.asarray(variables["params"][layer]["kernel"], np.float64)
    if layer in SN_LAYERS:
      kernel = kernel / _largest_singular_value(kernel)
    state[name] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).astype(np.float32).copy())
  reference.load_state_dict(state)
  with torch.no_grad():
    expected = reference(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
  assert logits.shape == expected.shape == (2, 16, 16, 1) and logits.dtype == jnp.float32
  assert expected.std() > 1e-2
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_sows_every_block(tiny_sn):
  _, variables, _, x, train, _ = tiny_sn
  _, state = train(variables, x)
  shapes = [f.shape for f in state["intermediates"]["features"]]
  assert shapes == [(2, 16, 16, 4), (2, 8, 8, 8), (2, 4, 4, 16), (2, 2, 2, 32), (2, 4, 4, 16), (2, 8, 8, 8),
                    (2, 16, 16, 4), (2, 16, 16, 4), (2, 16, 16, 4)]


def test_skip_connection_off_bfloat16_and_errors(tiny_sn):
  _, variables, _, x, _, evaluate = tiny_sn
  no_skip = unet_sn.UNetDiscriminatorSN(num_feat=4, skip_connection=False)
  assert jax.tree.map(jnp.shape, jax.eval_shape(no_skip.init, jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, variables)
  low = jax.jit(unet_sn.UNetDiscriminatorSN(num_feat=4, dtype=jnp.bfloat16).apply)(variables, x)
  high, _ = evaluate(variables, x)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(low), np.asarray(high), rtol=0.05, atol=0.05 * np.abs(high).max())
  with pytest.raises(ValueError, match="multiples of 8"):
    jax.eval_shape(no_skip.init, jax.random.key(0), jnp.zeros((1, 12, 16, 3)))
  with pytest.raises(ValueError, match="discriminator.skip_connection"):
    unet_sn.UNetDiscriminatorSN(skip_connection="yes")
  built = models.make_discriminator({"name": "unet_sn", "num_feat": 8, "skip_connection": False})
  assert isinstance(built, unet_sn.UNetDiscriminatorSN) and not built.skip_connection
