"""pix2pix's U-Net generator and PatchGAN discriminator against torch networks written here from the paper's
description (Isola et al. 2017, appendix 6.1): parameter counts, state-dict shapes, outputs on copied weights,
train/eval behaviour of batch norm and dropout, the 70x70 receptive field."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restore_jax import models
from restore_jax.models import patchgan, unet

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _random_variables(module, x, seed: int = 0):
  """Every leaf of the module's variables drawn at random (He-scaled kernels, batch-norm running statistics away
  from 0 and 1), so every parameter and statistic changes the output; cheaper to compile than `init`."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def sample(path, leaf):
    name = path[-1].key
    if name == "kernel":
      value = np.sqrt(2.0 / np.prod(leaf.shape[:-1])) * rng.standard_normal(leaf.shape)
    elif name == "scale":
      value = 1.0 + 0.2 * rng.standard_normal(leaf.shape)
    elif name == "var":
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:  # bias, mean
      value = 0.2 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def _torch_conv(kernel) -> np.ndarray:
  """Flax HWIO -> torch (out, in, kh, kw)."""
  return np.asarray(kernel).transpose(3, 2, 0, 1).copy()


def _torch_conv_transpose(kernel) -> np.ndarray:
  """Flax ConvTranspose HWIO -> torch ConvTranspose2d (in, out, kh, kw): torch's transposed conv is the adjoint
  of its conv, which correlates with the spatially flipped kernel."""
  return np.asarray(kernel)[::-1, ::-1].transpose(2, 3, 0, 1).copy()


def _torch_shape(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
  if kind == "conv":
    return (shape[3], shape[2], shape[0], shape[1])
  if kind == "conv_transpose":
    return (shape[2], shape[3], shape[0], shape[1])
  return tuple(shape)


def _to_torch(leaf, kind: str) -> torch.Tensor:
  if kind == "conv":
    return torch.from_numpy(_torch_conv(leaf))
  if kind == "conv_transpose":
    return torch.from_numpy(_torch_conv_transpose(leaf))
  return torch.from_numpy(np.array(leaf))


def _batch_norm_pairs(prefix: str, params, stats):
  yield f"{prefix}.weight", params["scale"], "vector"
  yield f"{prefix}.bias", params["bias"], "vector"
  yield f"{prefix}.running_mean", stats["mean"], "vector"
  yield f"{prefix}.running_var", stats["var"], "vector"


def _check_mapping(torch_model, pairs, variables) -> None:
  """Every torch parameter and running statistic has exactly one Flax leaf of the same shape, and back."""
  expected = {k: tuple(v.shape) for k, v in torch_model.state_dict().items() if not k.endswith("num_batches_tracked")}
  mapped = {key: _torch_shape(tuple(leaf.shape), kind) for key, leaf, kind in pairs}
  assert mapped == expected
  assert len(pairs) == len(jax.tree.leaves(variables))  # No Flax leaf is left out.


def _load(torch_model, pairs) -> None:
  state = {key: _to_torch(leaf, kind) for key, leaf, kind in pairs}
  missing, unexpected = torch_model.load_state_dict(state, strict=False)
  assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)


def _nchw(x) -> torch.Tensor:
  return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def _nhwc(t: torch.Tensor) -> np.ndarray:
  return t.detach().numpy().transpose(0, 2, 3, 1)


# ------------------------------------------------------------------------------------------------ U-Net


class TorchUNet(torch.nn.Module):
  """The U-Net of appendix 6.1.1 as flat lists: level i's down conv, norm, up conv, norm, dropout.

  Encoder: 4x4 stride-2 convs, leaky ReLU 0.2 before every conv but the first, batch norm after every conv but
  the first and the innermost (a 1x1 map at 256 px). Decoder: ReLU, 4x4 stride-2 transposed conv, batch norm,
  dropout in the `dropout_blocks` blocks nearest the bottleneck, then concatenation with the encoder map of the
  same size. Convs followed by batch norm have no bias. Images enter in [-1, 1], tanh leaves in [0, 1].
  """

  def __init__(self, in_ch, out_ch, num_downs, num_feat, max_feat, dropout_blocks=3, dropout_rate=0.5):
    super().__init__()
    n = self.num_downs = num_downs
    widths = [min(num_feat * 2**i, max_feat) for i in range(n)]
    nn_ = torch.nn
    self.down = nn_.ModuleList(
        nn_.Conv2d(in_ch if i == 0 else widths[i - 1], widths[i], 4, 2, 1, bias=False) for i in range(n))
    self.down_norm = nn_.ModuleList(
        nn_.BatchNorm2d(widths[i]) if 0 < i < n - 1 else nn_.Identity() for i in range(n))
    self.up = nn_.ModuleList(
        nn_.ConvTranspose2d(widths[i] if i == n - 1 else 2 * widths[i], out_ch if i == 0 else widths[i - 1], 4, 2,
                            1, bias=i == 0) for i in range(n))
    self.up_norm = nn_.ModuleList(nn_.BatchNorm2d(widths[i - 1]) if i > 0 else nn_.Identity() for i in range(n))
    self.dropout = nn_.ModuleList(
        nn_.Dropout(dropout_rate) if 0 < i and i >= n - dropout_blocks else nn_.Identity() for i in range(n))

  def forward(self, x):
    h = 2 * x - 1
    skips = []
    for i in range(self.num_downs):
      if i > 0:
        h = F.leaky_relu(h, 0.2)
      h = self.down_norm[i](self.down[i](h))
      skips.append(h)
    for i in reversed(range(self.num_downs)):
      h = self.up[i](F.relu(h))
      if i > 0:
        h = torch.cat([skips[i - 1], self.dropout[i](self.up_norm[i](h))], 1)
    return (torch.tanh(h) + 1) / 2


def _unet_level(tree, i: int):
  node = tree["level0"]
  for j in range(1, i + 1):
    node = node[f"level{j}"]
  return node


def _unet_pairs(variables, num_downs: int):
  """(torch state-dict key, Flax leaf, layout) for every weight and statistic of TorchUNet."""
  pairs = []
  for i in range(num_downs):
    p = _unet_level(variables["params"], i)
    s = _unet_level(variables["batch_stats"], i) if i > 0 else None  # Level 0 has no norm.
    pairs.append((f"down.{i}.weight", p["down"]["kernel"], "conv"))
    if 0 < i < num_downs - 1:
      pairs += _batch_norm_pairs(f"down_norm.{i}", p["down_norm"], s["down_norm"])
    pairs.append((f"up.{i}.weight", p["up"]["kernel"], "conv_transpose"))
    if i == 0:
      pairs.append(("up.0.bias", p["up"]["bias"], "vector"))
    else:
      pairs += _batch_norm_pairs(f"up_norm.{i}", p["up_norm"], s["up_norm"])
  return pairs


def test_unet_256_parameter_count_and_state_dict_match_torch_reference():
  """pix2pix's unet_256 (8 downs, 64 features, 3 -> 3 channels); its code prints 54.414 M parameters."""
  net = unet.UNetGenerator(out_ch=3, num_downs=8, num_feat=64, max_feat=512)
  variables = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 256, 256, 3)))
  with torch.device("meta"):  # Shapes only: no 54 M weights allocated.
    reference = TorchUNet(3, 3, 8, 64, 512)
  torch_count = sum(p.numel() for p in reference.parameters())
  assert _count(variables["params"]) == torch_count
  assert round(torch_count / 1e6, 3) == 54.414
  _check_mapping(reference, _unet_pairs(variables, 8), variables)
  # The published encoder widths C64-C128-C256-C512-C512-C512-C512-C512.
  widths = [_unet_level(variables["params"], i)["down"]["kernel"].shape[-1] for i in range(8)]
  assert widths == [64, 128, 256, 512, 512, 512, 512, 512]


def _dropout_key(seed: int) -> jax.Array:
  return jax.random.key(seed, impl="rbg")  # Its random-bits program compiles in a fraction of threefry's time.


TINY_UNET = dict(out_ch=3, num_downs=5, num_feat=4, max_feat=16)


@pytest.fixture(scope="module")
def tiny_unet():
  """RGB + mask in, RGB out, 32 px: five levels down to 1x1. Each apply is compiled once for the module."""
  net = unet.UNetGenerator(**TINY_UNET)
  no_dropout = unet.UNetGenerator(**TINY_UNET, dropout_rate=0.0)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 4))
  variables = _random_variables(net, x)
  applies = dict(
      eval=jax.jit(net.apply),
      train=jax.jit(lambda v, x, key: net.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])),
      train_no_dropout=jax.jit(lambda v, x, key: no_dropout.apply(
          v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])),
  )
  return net, variables, x, applies


def test_unet_matches_torch_reference_in_eval_mode(tiny_unet):
  _, variables, x, applies = tiny_unet
  out = applies["eval"](variables, x)
  reference = TorchUNet(4, 3, 5, 4, 16).eval()
  _check_mapping(reference, _unet_pairs(variables, 5), variables)
  _load(reference, _unet_pairs(variables, 5))
  with torch.no_grad():
    expected = _nhwc(reference(_nchw(x)))
  assert out.shape == expected.shape == (2, 32, 32, 3) and out.dtype == jnp.float32
  assert 0.05 < expected.std()  # Not saturated: the comparison means something.
  np.testing.assert_allclose(np.asarray(out), expected, atol=2e-5)


def test_unet_train_mode_uses_batch_statistics_and_updates_them_like_torch(tiny_unet):
  """Dropout off, so train mode is deterministic: outputs normalised with the batch's statistics, and running
  averages moved 0.1 of the way to them (PyTorch's momentum)."""
  _, variables, x, applies = tiny_unet
  out, updates = applies["train_no_dropout"](variables, x, _dropout_key(0))
  reference = TorchUNet(4, 3, 5, 4, 16, dropout_blocks=0).train()
  _load(reference, _unet_pairs(variables, 5))
  expected = _nhwc(reference(_nchw(x)))
  np.testing.assert_allclose(np.asarray(out), expected, atol=2e-5)
  assert np.abs(np.asarray(out) - np.asarray(applies["eval"](variables, x))).max() > 1e-2

  new_stats = {key: np.asarray(leaf) for key, leaf, _ in _unet_pairs({"params": variables["params"], **updates}, 5)}
  old_stats = {key: np.asarray(leaf) for key, leaf, _ in _unet_pairs(variables, 5)}
  torch_state = reference.state_dict()
  means = [k for k in new_stats if k.endswith("running_mean")]
  assert len(means) == 7  # 3 encoder + 4 decoder batch norms.
  for key in means:
    np.testing.assert_allclose(new_stats[key], torch_state[key].numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(new_stats[key] - old_stats[key]).max() > 1e-4
  # torch moves the running variance with the unbiased batch variance, flax with the biased one (the one both
  # normalise with): undo Bessel's correction on torch's to compare; m is the number of values per channel.
  for key, m in _batch_norm_sizes(x.shape[1]).items():
    old, torch_new = old_stats[key], torch_state[key].numpy()
    unbiased = (torch_new - 0.9 * old) / 0.1
    np.testing.assert_allclose(new_stats[key], 0.9 * old + 0.1 * unbiased * (m - 1) / m, rtol=1e-4, atol=1e-6)


def _batch_norm_sizes(size: int, batch: int = 2, num_downs: int = 5) -> dict[str, int]:
  """Values per channel that each running variance of TinyUNet averaged over: batch x the map's pixels."""
  sizes = {}
  for i in range(1, num_downs - 1):
    sizes[f"down_norm.{i}.running_var"] = batch * (size // 2 ** (i + 1)) ** 2
  for i in range(1, num_downs):
    sizes[f"up_norm.{i}.running_var"] = batch * (size // 2**i) ** 2
  return sizes


def test_unet_output_is_tanh_mapped_to_unit_interval(tiny_unet):
  """With the last transposed conv zeroed but for its bias b, every output is (tanh(b) + 1) / 2."""
  _, variables, x, applies = tiny_unet
  params = flax.core.copy(variables["params"], {})
  bias = np.array([-3.0, 0.0, 0.7], np.float32)
  params["level0"] = {**params["level0"], "up": {"kernel": jnp.zeros_like(params["level0"]["up"]["kernel"]),
                                                "bias": jnp.asarray(bias)}}
  out = applies["eval"]({**variables, "params": params}, x)
  np.testing.assert_allclose(np.asarray(out), np.broadcast_to((np.tanh(bias) + 1) / 2, out.shape), atol=1e-6)


def test_unet_dropout_sits_in_the_three_decoder_blocks_nearest_the_bottleneck():
  """CD512-CD512-CD512-C512-...: the innermost three of the 256 px network's eight levels."""
  net = unet.UNetGenerator(num_downs=8, num_feat=2, max_feat=8)
  x = jnp.zeros((1, 256, 256, 3))
  variables = jax.eval_shape(net.init, jax.random.key(0), x)
  _, state = jax.eval_shape(lambda v: net.apply(
      v, x, train=True, rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda module, _: isinstance(module, nn.Dropout)), variables)
  levels = []
  for path, _ in jax.tree_util.tree_leaves_with_path(state["intermediates"]):
    names = [str(getattr(key, "key", "")) for key in path]
    assert "up_dropout" in names
    levels.append(max(int(name[len("level"):]) for name in names if name.startswith("level")))
  assert sorted(levels) == [5, 6, 7]


def test_unet_dropout_is_active_only_in_train_mode(tiny_unet):
  net, variables, x, applies = tiny_unet
  a, _ = applies["train"](variables, x, _dropout_key(1))
  b, _ = applies["train"](variables, x, _dropout_key(2))
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3  # Different dropout masks.
  # Without dropout the key changes nothing.
  c, _ = applies["train_no_dropout"](variables, x, _dropout_key(1))
  d, _ = applies["train_no_dropout"](variables, x, _dropout_key(2))
  np.testing.assert_array_equal(np.asarray(c), np.asarray(d))
  # Evaluation is deterministic, and train mode needs a "dropout" key.
  np.testing.assert_array_equal(np.asarray(applies["eval"](variables, x)), np.asarray(applies["eval"](variables, x)))
  with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
    jax.eval_shape(lambda v: net.apply(v, x, train=True, mutable=["batch_stats"]), variables)


def test_unet_norm_options():
  x = jnp.zeros((1, 8, 8, 1))
  for norm, collections in (("batch", {"params", "batch_stats"}), ("instance", {"params"}), ("none", {"params"})):
    net = unet.UNetGenerator(num_downs=3, num_feat=2, norm=norm)
    variables = jax.eval_shape(net.init, jax.random.key(0), x)
    assert set(variables) == collections, norm
    # Batch norm replaces the bias of the conv before it; without it every conv has one.
    has_bias = "bias" in variables["params"]["level0"]["level1"]["down"]
    assert has_bias == (norm != "batch"), norm
  with pytest.raises(ValueError, match="generator.norm"):
    unet.UNetGenerator(norm="layer")


def test_unet_rejects_bad_options_and_sizes():
  with pytest.raises(ValueError, match="generator.num_downs"):
    unet.UNetGenerator(num_downs=0)
  with pytest.raises(ValueError, match="generator.dropout_rate"):
    unet.UNetGenerator(dropout_rate=1.0)
  with pytest.raises(ValueError, match="multiples of 32"):
    jax.eval_shape(unet.UNetGenerator(**TINY_UNET).init, jax.random.key(0), jnp.zeros((1, 48, 32, 3)))


def test_unet_bfloat16_computes_with_float32_params_and_output(tiny_unet):
  _, variables, x, applies = tiny_unet
  out = applies["eval"](variables, x)
  net = unet.UNetGenerator(**TINY_UNET, dtype=jnp.bfloat16)
  shapes = jax.eval_shape(net.init, jax.random.key(0), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  low = jax.jit(net.apply)(variables, x)
  assert low.dtype == jnp.float32 and low.shape == out.shape
  np.testing.assert_allclose(np.asarray(low), np.asarray(out), atol=0.05)


# ------------------------------------------------------------------------------------------------ PatchGAN


class TorchPatchGAN(torch.nn.Module):
  """The 70x70 PatchGAN of appendix 6.1.2, C64-C128-C256-C512 (strides 2, 2, 2, 1) then a conv to one channel,
  written as one nn.Sequential: conv0, then (conv, norm, leaky ReLU) per layer, then the last conv."""

  def __init__(self, in_ch, num_feat, num_layers, norm):
    super().__init__()
    nn_ = torch.nn
    norms = {"batch": nn_.BatchNorm2d, "instance": nn_.InstanceNorm2d, "none": lambda _: nn_.Identity()}
    body = [nn_.Conv2d(in_ch, num_feat, 4, 2, 1), nn_.LeakyReLU(0.2)]
    previous = num_feat
    for n in range(1, num_layers + 1):
      width = num_feat * min(2**n, 8)
      body += [nn_.Conv2d(previous, width, 4, 2 if n < num_layers else 1, 1, bias=norm != "batch"),
               norms[norm](width), nn_.LeakyReLU(0.2)]
      previous = width
    body.append(nn_.Conv2d(previous, 1, 4, 1, 1))
    self.body = nn_.Sequential(*body)

  def forward(self, x):
    return self.body(2 * x - 1)


def _patchgan_pairs(variables, num_layers: int, norm: str):
  params, stats = variables["params"], variables.get("batch_stats", {})
  pairs = [("body.0.weight", params["conv0"]["kernel"], "conv"), ("body.0.bias", params["conv0"]["bias"], "vector")]
  for n in range(1, num_layers + 1):
    index = 2 + 3 * (n - 1)
    pairs.append((f"body.{index}.weight", params[f"conv{n}"]["kernel"], "conv"))
    if norm != "batch":
      pairs.append((f"body.{index}.bias", params[f"conv{n}"]["bias"], "vector"))
    else:
      pairs += _batch_norm_pairs(f"body.{index + 1}", params[f"norm{n}"], stats[f"norm{n}"])
  last = 2 + 3 * num_layers
  pairs += [(f"body.{last}.weight", params[f"conv{num_layers + 1}"]["kernel"], "conv"),
            (f"body.{last}.bias", params[f"conv{num_layers + 1}"]["bias"], "vector")]
  return pairs


def test_patchgan_70_parameter_count_by_hand_and_against_torch():
  """The conditional 70x70 PatchGAN: condition (3) + image (3) channels; pix2pix's code prints 2.769 M."""
  hand_count = (
      4 * 4 * 6 * 64 + 64  # C64, no norm, with bias.
      + 4 * 4 * 64 * 128 + 2 * 128  # C128 + batch norm scale and shift (no conv bias).
      + 4 * 4 * 128 * 256 + 2 * 256  # C256.
      + 4 * 4 * 256 * 512 + 2 * 512  # C512, stride 1.
      + 4 * 4 * 512 * 1 + 1)  # To one logit per patch.
  assert hand_count == 2_768_705
  net = patchgan.PatchGAN(num_feat=64, num_layers=3)
  variables = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 256, 256, 6)))
  assert _count(variables["params"]) == hand_count
  with torch.device("meta"):
    reference = TorchPatchGAN(6, 64, 3, "batch")
  assert sum(p.numel() for p in reference.parameters()) == hand_count
  _check_mapping(reference, _patchgan_pairs(variables, 3, "batch"), variables)
  # 256 -> 128 -> 64 -> 32 (stride 2) -> 31 -> 30 (4x4 stride 1, padding 1): 30x30 patches.
  logits = jax.eval_shape(net.apply, variables, jnp.zeros((2, 256, 256, 6)))
  assert logits.shape == (2, 30, 30, 1) and logits.dtype == jnp.float32


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_patchgan_matches_torch_reference_in_eval_mode(norm):
  net = patchgan.PatchGAN(num_feat=4, num_layers=3, norm=norm)
  x = jax.random.uniform(jax.random.key(2), (2, 40, 40, 6))
  variables = _random_variables(net, x, seed=1)
  reference = TorchPatchGAN(6, 4, 3, norm).eval()
  pairs = _patchgan_pairs(variables, 3, norm)
  _check_mapping(reference, pairs, variables)
  _load(reference, pairs)
  with torch.no_grad():
    expected = _nhwc(reference(_nchw(x)))
  got = np.asarray(jax.jit(net.apply)(variables, x))
  assert got.shape == expected.shape == (2, 3, 3, 1)  # 40 -> 20 -> 10 -> 5 -> 4 -> 3.
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_layers, receptive_field", [(1, 16), (3, 70), (5, 286)])
def test_patchgan_receptive_field(num_layers, receptive_field):
  """The input pixels one logit depends on form a square of the published size (1 -> 16, 3 -> 70, 5 -> 286:
  Isola et al. 2017, section 4.4), found from the gradient of that logit."""
  net = patchgan.PatchGAN(num_feat=1, num_layers=num_layers, norm="none")
  size = 8 * ((2 * receptive_field) // 8 + 1)
  x = jax.random.uniform(jax.random.key(3), (1, size, size, 1))
  variables = _random_variables(net, x)
  logits = jax.eval_shape(net.apply, variables, x)
  i, j = logits.shape[1] // 2, logits.shape[2] // 2
  grad = np.asarray(jax.jit(jax.grad(lambda x: net.apply(variables, x)[0, i, j, 0]))(x))[0, :, :, 0]
  rows, cols = np.nonzero(grad)
  assert rows.max() - rows.min() + 1 == receptive_field
  assert cols.max() - cols.min() + 1 == receptive_field
  assert rows.min() > 0 and rows.max() < size - 1  # Inside the image: padding did not cut it.
  assert len(rows) == receptive_field**2


@pytest.fixture(scope="module")
def tiny_patchgan_train():
  """A batch-norm and an instance-norm PatchGAN in train mode, each compiled once."""
  x = jax.random.uniform(jax.random.key(4), (3, 32, 32, 6))
  nets = {norm: patchgan.PatchGAN(num_feat=4, num_layers=3, norm=norm) for norm in ("batch", "instance")}
  variables = {norm: _random_variables(net, x) for norm, net in nets.items()}
  train = {norm: jax.jit(lambda v, x, net=net: net.apply(v, x, train=True, mutable=["batch_stats", "intermediates"]))
           for norm, net in nets.items()}
  return nets, variables, train, x


def test_patchgan_batch_norm_trains_on_batch_statistics(tiny_patchgan_train):
  _, variables, train, x = tiny_patchgan_train
  _, state = train["batch"](variables["batch"], x)
  # The first norm's running mean moved 0.1 of the way to the batch mean of its input, conv1's output.
  params = variables["batch"]["params"]
  h = F.leaky_relu(F.conv2d(2 * _nchw(x) - 1, torch.from_numpy(_torch_conv(params["conv0"]["kernel"])),
                            torch.from_numpy(np.array(params["conv0"]["bias"])), stride=2, padding=1), 0.2)
  h = F.conv2d(h, torch.from_numpy(_torch_conv(params["conv1"]["kernel"])), stride=2, padding=1)
  old = np.asarray(variables["batch"]["batch_stats"]["norm1"]["mean"])
  expected = 0.9 * old + 0.1 * h.numpy().mean(axis=(0, 2, 3))
  np.testing.assert_allclose(np.asarray(state["batch_stats"]["norm1"]["mean"]), expected, rtol=1e-4, atol=1e-6)


def test_patchgan_instance_norm_scores_each_image_on_its_own(tiny_patchgan_train):
  """What a gradient-penalty critic needs: with instance norm, changing one image leaves the others' logits
  alone even in train mode; with batch norm in train mode it does not."""
  _, variables, train, x = tiny_patchgan_train
  changed = x.at[0].set(1.0 - x[0])
  for norm, independent in (("instance", True), ("batch", False)):
    before, _ = train[norm](variables[norm], x)
    after, _ = train[norm](variables[norm], changed)
    assert np.abs(np.asarray(after[0]) - np.asarray(before[0])).max() > 1e-3
    same = np.allclose(np.asarray(after[1:]), np.asarray(before[1:]), rtol=1e-5, atol=1e-6)
    assert same == independent, norm


def test_patchgan_sows_one_feature_map_per_block(tiny_patchgan_train):
  _, variables, train, x = tiny_patchgan_train
  _, state = train["instance"](variables["instance"], x)
  features = state["intermediates"]["features"]
  assert [f.shape for f in features] == [(3, 16, 16, 4), (3, 8, 8, 8), (3, 4, 4, 16), (3, 3, 3, 32)]
  assert all(f.dtype == jnp.float32 for f in features)
  assert all(float(f.min()) < 0 for f in features)  # After leaky ReLU: negative slope kept.


def test_patchgan_bfloat16_runs_with_float32_params_and_output():
  """Against the float32 torch reference: bfloat16 keeps about three significant digits."""
  net = patchgan.PatchGAN(num_feat=4, num_layers=3, norm="none", dtype=jnp.bfloat16)
  x = jax.random.uniform(jax.random.key(2), (2, 40, 40, 6))
  variables = _random_variables(net, x, seed=1)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  low = jax.jit(net.apply)(variables, x)
  reference = TorchPatchGAN(6, 4, 3, "none").eval()
  _load(reference, _patchgan_pairs(variables, 3, "none"))
  with torch.no_grad():
    expected = _nhwc(reference(_nchw(x)))
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(low), expected, atol=0.05 * np.abs(expected).max())


def test_patchgan_rejects_bad_options():
  with pytest.raises(ValueError, match="discriminator.norm"):
    patchgan.PatchGAN(norm="spectral")
  with pytest.raises(ValueError, match="discriminator.num_layers"):
    patchgan.PatchGAN(num_layers=0)
  # 3 layers: 23 // 8 = 2, then the two stride-1 convs leave nothing; 24 // 8 = 3 leaves one logit.
  net = patchgan.PatchGAN(num_feat=2, num_layers=3)
  with pytest.raises(ValueError, match="at least 24x24"):
    jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 23, 40, 3)))
  logits = jax.eval_shape(net.init_with_output, jax.random.key(0), jnp.zeros((1, 24, 24, 3)))[0]
  assert logits.shape == (1, 1, 1, 1)


def test_registry_builds_pix2pix_networks():
  generator = models.make_generator({"name": "unet", "num_downs": 6, "num_feat": 8, "norm": "instance"})
  assert isinstance(generator, unet.UNetGenerator) and (generator.num_downs, generator.norm) == (6, "instance")
  critic = models.make_discriminator({"name": "patchgan", "num_layers": 2, "norm": "none", "dtype": "bfloat16"})
  assert isinstance(critic, patchgan.PatchGAN) and critic.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="generator.norm"):
    models.make_generator({"name": "unet", "norm": "group"})
