"""Generators, critic, VGG19 features and the registry: sizes, shapes, and RRDBNet against a torch reference.

The pix2pix U-Net and PatchGAN, the image translator and the U-Net SN discriminator have their own test_models_*
files."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from restore_jax import models
from restore_jax.models import rrdb, vgg19, vgg_critic

TINY_RRDB = dict(num_feat=8, num_block=1, num_grow_ch=4)


def _param_count(module, x) -> int:
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  return sum(leaf.size for leaf in jax.tree.leaves(shapes))


def _conv_params(k: int, cin: int, cout: int) -> int:
  return k * k * cin * cout + cout


def _random_variables(module, x, seed: int = 0):
  """He-scaled Gaussian weights and small random biases in the module's tree: cheaper than `init`, whose
  per-parameter random-number code takes XLA seconds to compile, and every branch contributes."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def sample(path, leaf):
    if jax.tree_util.keystr(path).endswith("['bias']"):
      return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(np.sqrt(2.0 / fan_in) * rng.standard_normal(leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(sample, shapes)


# ------------------------------------------------------------------------------------------------ RRDBNet


def test_rrdb_full_size_has_esrgan_parameter_count():
  net = rrdb.RRDBNet(num_feat=64, num_block=23, num_grow_ch=32, scale=4)
  assert _param_count(net, jnp.zeros((1, 16, 16, 3))) == 16_697_987  # BasicSR's RRDBNet at ESRGAN size.


@pytest.fixture(scope="module")
def tiny_rrdb():
  net = rrdb.RRDBNet(**TINY_RRDB, scale=4)
  x = jax.random.uniform(jax.random.key(1), (2, 6, 5, 3))
  return net, _random_variables(net, x), x


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdb_output_is_scale_times_input(scale):
  net = rrdb.RRDBNet(**TINY_RRDB, scale=scale)
  x = jnp.zeros((2, 6, 5, 3))
  out = jax.eval_shape(lambda: net.init_with_output(jax.random.key(0), x)[0])
  assert out.shape == (2, 6 * scale, 5 * scale, 3)
  assert out.dtype == jnp.float32


def test_rrdb_bicubic_residual_adds_a_bicubic_upsampling(tiny_rrdb):
  """With the last conv zeroed the network's own output is 0, so what remains is the bicubic skip alone."""
  _, variables, x = tiny_rrdb
  net = rrdb.RRDBNet(**TINY_RRDB, scale=4, bicubic_residual=True)
  zeroed = jax.tree.map(jnp.zeros_like, variables["params"]["conv_last"])
  params = {**variables["params"], "conv_last": zeroed}
  out = net.apply({"params": params}, x)
  expected = jax.image.resize(x, (2, 24, 20, 3), "bicubic")
  np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-6)
  # Without the skip the same parameters give zeros: the skip really is the only difference.
  plain = rrdb.RRDBNet(**TINY_RRDB, scale=4).apply({"params": params}, x)
  np.testing.assert_allclose(np.asarray(plain), 0.0, atol=1e-7)
  assert _param_count(net, x) == _param_count(rrdb.RRDBNet(**TINY_RRDB, scale=4), x)


def test_rrdb_rejects_unsupported_scale():
  with pytest.raises(ValueError, match="scale"):
    rrdb.RRDBNet(**TINY_RRDB, scale=3).init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))


def test_rrdb_dense_block_init_is_kaiming_times_0p1():
  net = rrdb.RRDBNet(**TINY_RRDB)
  variables = jax.jit(net.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 4, 4, 3)))  # rbg: quick to compile.
  rdb = variables["params"]["body_0"]["rdb2"]
  kernels = np.concatenate([np.ravel(rdb[f"conv{i}"]["kernel"]) for i in range(1, 6)])
  # Every conv has its own fan-in; normalise each by 0.1 * sqrt(2 / fan_in) and pool.
  normalised = np.concatenate([
      np.ravel(rdb[f"conv{i}"]["kernel"]) / (0.1 * np.sqrt(2.0 / np.prod(rdb[f"conv{i}"]["kernel"].shape[:3])))
      for i in range(1, 6)])
  assert kernels.size > 2000
  assert abs(normalised.std() - 1.0) < 0.08
  assert abs(normalised.mean()) < 0.08


def test_rrdb_bfloat16_compute_keeps_float32_params_and_output():
  net = rrdb.RRDBNet(**TINY_RRDB, dtype=jnp.bfloat16)
  x = jnp.zeros((1, 4, 4, 3))
  variables = _random_variables(net, x)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = jax.jit(net.apply)(variables, x)
  assert out.dtype == jnp.float32 and out.shape == (1, 16, 16, 3)


def _torch_rrdbnet(params, num_block: int, num_up: int = 2):
  """A hand-written torch RRDBNet (ESRGAN paper, Fig. 4) carrying the Flax weights: an independent forward."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional

  def conv(p, x):
    weight = torch.from_numpy(np.asarray(p["kernel"]).transpose(3, 2, 0, 1).copy())
    return F.conv2d(x, weight, torch.from_numpy(np.array(p["bias"])), padding=1)

  def lrelu(x):
    return F.leaky_relu(x, 0.2)

  def dense_block(p, x):
    x1 = lrelu(conv(p["conv1"], x))
    x2 = lrelu(conv(p["conv2"], torch.cat([x, x1], 1)))
    x3 = lrelu(conv(p["conv3"], torch.cat([x, x1, x2], 1)))
    x4 = lrelu(conv(p["conv4"], torch.cat([x, x1, x2, x3], 1)))
    return x + 0.2 * conv(p["conv5"], torch.cat([x, x1, x2, x3, x4], 1))

  def forward(x):
    feat = conv(params["conv_first"], x)
    trunk = feat
    for i in range(num_block):
      p = params[f"body_{i}"]
      trunk = trunk + 0.2 * dense_block(p["rdb3"], dense_block(p["rdb2"], dense_block(p["rdb1"], trunk)))
    feat = feat + conv(params["conv_body"], trunk)
    for i in range(1, num_up + 1):
      feat = lrelu(conv(params[f"conv_up{i}"], F.interpolate(feat, scale_factor=2, mode="nearest")))
    return conv(params["conv_last"], lrelu(conv(params["conv_hr"], feat)))

  return torch, forward


def test_rrdb_matches_torch_reference(tiny_rrdb):
  net, variables, x = tiny_rrdb
  torch, forward = _torch_rrdbnet(variables["params"], TINY_RRDB["num_block"])
  with torch.no_grad():
    expected = forward(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(jax.jit(net.apply)(variables, x))
  assert got.shape == expected.shape == (2, 24, 20, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_rrdb_keeps_the_x4_module_tree():
  """Checkpoints written before scale 1 existed still fit: the same top-level names and shapes."""
  net = rrdb.RRDBNet(**TINY_RRDB, scale=4)
  params = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 4, 4, 3)))["params"]
  assert sorted(params) == sorted(["conv_first", "body_0", "conv_body", "conv_up1", "conv_up2", "conv_hr",
                                   "conv_last"])
  assert sorted(params["body_0"]) == ["rdb1", "rdb2", "rdb3"]
  assert sorted(params["body_0"]["rdb1"]) == [f"conv{i}" for i in range(1, 6)]
  assert params["conv_up2"]["kernel"].shape == (3, 3, 8, 8)


@pytest.mark.parametrize("scale, stages", [(1, 0), (2, 1)])
def test_rrdb_at_scale_1_and_2_drops_upsampling_stages(scale, stages):
  """Each nearest-x2 stage is one 3x3 num_feat -> num_feat conv; scale 1 has none, scale 2 one."""
  x = jnp.zeros((1, 4, 4, 3))
  x4 = jax.eval_shape(rrdb.RRDBNet(**TINY_RRDB, scale=4).init, jax.random.key(0), x)["params"]
  params = jax.eval_shape(rrdb.RRDBNet(**TINY_RRDB, scale=scale).init, jax.random.key(0), x)["params"]
  count = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))
  assert count(params) == count(x4) - (2 - stages) * _conv_params(3, TINY_RRDB["num_feat"], TINY_RRDB["num_feat"])
  assert sorted(k for k in params if k.startswith("conv_up")) == [f"conv_up{i}" for i in range(1, stages + 1)]


@pytest.mark.parametrize("scale", [1, 2])
def test_rrdb_scale_1_and_2_match_torch_reference(scale):
  net = rrdb.RRDBNet(**TINY_RRDB, scale=scale)
  x = jax.random.uniform(jax.random.key(4), (2, 6, 5, 3))
  variables = _random_variables(net, x)
  torch, forward = _torch_rrdbnet(variables["params"], TINY_RRDB["num_block"], num_up=scale // 2)
  with torch.no_grad():
    expected = forward(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(jax.jit(net.apply)(variables, x))
  assert got.shape == expected.shape == (2, 6 * scale, 5 * scale, 3)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_rrdb_ignores_train_and_takes_any_channel_count(tiny_rrdb):
  net, variables, x = tiny_rrdb
  apply = jax.jit(net.apply, static_argnames="train")
  np.testing.assert_array_equal(np.asarray(apply(variables, x, train=True)), np.asarray(apply(variables, x)))
  for channels in (1, 4):  # Gray input; RGB + mask.
    out = jax.eval_shape(lambda: rrdb.RRDBNet(**TINY_RRDB, scale=1).init_with_output(
        jax.random.key(0), jnp.zeros((1, 4, 4, channels)))[0])
    assert out.shape == (1, 4, 4, 3)


def test_rrdb_scale_1_residual_adds_the_input_itself(tiny_rrdb):
  _, _, x = tiny_rrdb
  net = rrdb.RRDBNet(**TINY_RRDB, scale=1, bicubic_residual=True)
  variables = _random_variables(net, x)
  zeroed = jax.tree.map(jnp.zeros_like, variables["params"]["conv_last"])
  out = jax.jit(net.apply)({"params": {**variables["params"], "conv_last": zeroed}}, x)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))
  with pytest.raises(ValueError, match="generator.bicubic_residual"):
    jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 4, 4, 4)))


# ------------------------------------------------------------------------------------------------ VGGCritic


def test_critic_full_size_parameter_count_matches_hand_count():
  hand_count = (
      _conv_params(3, 3, 64) + _conv_params(4, 64, 64)
      + _conv_params(3, 64, 128) + _conv_params(4, 128, 128)
      + _conv_params(3, 128, 256) + _conv_params(4, 256, 256)
      + _conv_params(3, 256, 512) + _conv_params(4, 512, 512)
      + _conv_params(3, 512, 512) + _conv_params(4, 512, 512)
      + (512 * 4 * 4 * 100 + 100)  # 128 / 2**5 = 4: a 4x4x512 map into Dense(100).
      + (100 + 1))
  assert hand_count == 14_496_521
  assert _param_count(vgg_critic.VGGCritic(), jnp.zeros((1, 128, 128, 3))) == hand_count


@pytest.fixture(scope="module")
def tiny_critic():
  critic = vgg_critic.VGGCritic(num_feat=8, input_size=32)
  x = jax.random.uniform(jax.random.key(2), (3, 32, 32, 3))
  variables = _random_variables(critic, x)
  scores = jax.jit(critic.apply)(variables, x)
  return critic, variables, x, scores


def test_critic_outputs_one_float32_score_per_image(tiny_critic):
  critic, variables, x, scores = tiny_critic
  assert scores.shape == (3,) and scores.dtype == jnp.float32
  # Scores are per image: changing image 0 leaves the other scores alone (no batch statistics).
  changed = jax.jit(critic.apply)(variables, x.at[0].set(1.0 - x[0]))
  assert not np.isclose(changed[0], scores[0])
  np.testing.assert_allclose(changed[1:], scores[1:], rtol=1e-6)
  # 32 / 2**5 = 1: the last stage leaves a 1x1x64 map for Dense(100).
  assert variables["params"]["linear1"]["kernel"].shape == (64, 100)


def test_critic_sows_each_stage_and_takes_train(tiny_critic):
  critic, variables, x, _ = tiny_critic
  scores, state = jax.eval_shape(lambda v: critic.apply(v, x, train=True, mutable=["intermediates"]), variables)
  assert scores.shape == (3,)
  shapes = [f.shape for f in state["intermediates"]["features"]]
  assert shapes == [(3, 16, 16, 8), (3, 8, 8, 16), (3, 4, 4, 32), (3, 2, 2, 64), (3, 1, 1, 64)]


def test_critic_has_no_batch_norm(tiny_critic):
  _, variables, _, _ = tiny_critic
  assert set(variables) == {"params"}  # No batch_stats collection.
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(variables)]
  assert all(p.endswith("['kernel']") or p.endswith("['bias']") for p in paths), paths
  assert not any("norm" in p.lower() for p in paths)


def test_critic_rejects_wrong_input_size(tiny_critic):
  critic, variables, _, _ = tiny_critic
  with pytest.raises(ValueError, match="32x32"):
    critic.apply(variables, jnp.zeros((1, 64, 64, 3)))


def test_critic_rejects_input_size_not_multiple_of_32():
  with pytest.raises(ValueError, match="multiple of 32"):
    vgg_critic.VGGCritic(num_feat=8, input_size=48).init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))


# ------------------------------------------------------------------------------------------------ VGG19Features


@pytest.fixture(scope="module")
def vgg_all_layers():
  net = vgg19.VGG19Features(layers=vgg19.LAYER_NAMES)
  x = jax.random.uniform(jax.random.key(3), (1, 32, 32, 3))
  variables = _random_variables(net, x)
  features = jax.jit(net.apply)(variables, x)
  return net, variables, x, features


def test_vgg19_feature_shapes_per_stage(vgg_all_layers):
  *_, features = vgg_all_layers
  assert sorted(features) == sorted(vgg19.LAYER_NAMES) and len(features) == 16
  expected = {1: (32, 64), 2: (16, 128), 3: (8, 256), 4: (4, 512), 5: (2, 512)}  # Halved by each pool.
  for name, feature in features.items():
    size, width = expected[int(name[4])]
    assert feature.shape == (1, size, size, width), name


def test_vgg19_param_tree_is_named_by_layer(vgg_all_layers):
  _, variables, _, _ = vgg_all_layers
  params = variables["params"]
  assert sorted(params) == sorted(vgg19.LAYER_NAMES)
  assert params["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
  assert params["conv3_1"]["kernel"].shape == (3, 3, 128, 256)
  assert params["conv5_4"]["bias"].shape == (512,)


def test_vgg19_builds_only_up_to_the_deepest_layer():
  net = vgg19.VGG19Features(layers=("conv2_2", "conv1_1"))
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  assert sorted(shapes["params"]) == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]


def test_vgg19_before_and_after_activation(vgg_all_layers):
  _, variables, x, features = vgg_all_layers
  assert float(features["conv3_1"].min()) < 0  # Pre-ReLU maps keep negative values.
  after = vgg19.VGG19Features(layers=("conv3_1",), before_activation=False).apply(variables, x)
  np.testing.assert_allclose(after["conv3_1"], np.maximum(features["conv3_1"], 0), rtol=1e-5, atol=1e-6)


def test_vgg19_normalizes_with_imagenet_statistics(vgg_all_layers):
  _, variables, x, features = vgg_all_layers
  normalized = (np.asarray(x) - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  raw = vgg19.VGG19Features(layers=("conv1_1",), normalize_input=False).apply(variables, jnp.asarray(normalized))
  np.testing.assert_allclose(raw["conv1_1"], features["conv1_1"], rtol=1e-5, atol=1e-5)


def test_vgg19_rejects_unknown_layer():
  with pytest.raises(ValueError, match="conv6_1"):
    vgg19.VGG19Features(layers=("conv6_1",)).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


# ------------------------------------------------------------------------------------------------ Registry


def test_registry_builds_models_from_config():
  config = ml_collections.ConfigDict(dict(name="rrdb", num_feat=64, num_block=23, num_grow_ch=32, scale=4))
  generator = models.make_generator(config)
  assert isinstance(generator, rrdb.RRDBNet)
  assert (generator.num_feat, generator.num_block, generator.num_grow_ch, generator.scale) == (64, 23, 32, 4)
  critic = models.make_discriminator({"name": "vgg_critic", "num_feat": 8, "input_size": 32, "dtype": "bfloat16"})
  assert isinstance(critic, vgg_critic.VGGCritic)
  assert (critic.num_feat, critic.input_size, critic.dtype) == (8, 32, jnp.bfloat16)
  assert models.GENERATORS["rrdb"] is rrdb.RRDBNet
  assert models.DISCRIMINATORS["vgg_critic"] is vgg_critic.VGGCritic


def test_registry_unknown_name_lists_known_names():
  with pytest.raises(ValueError, match=r"swinir.*\['rrdb', 'translator', 'unet'\]"):
    models.make_generator({"name": "swinir"})
  with pytest.raises(ValueError, match=r"\['patchgan', 'unet_sn', 'vgg_critic'\]"):
    models.make_discriminator(ml_collections.ConfigDict({"name": "stylegan"}))


def test_registry_names_every_network():
  assert models.GENERATORS == {
      "rrdb": rrdb.RRDBNet, "unet": models.UNetGenerator, "translator": models.ImageTranslator}
  assert models.DISCRIMINATORS == {
      "vgg_critic": vgg_critic.VGGCritic, "patchgan": models.PatchGAN, "unet_sn": models.UNetDiscriminatorSN}


def test_registry_unknown_option_is_a_clear_error():
  with pytest.raises(ValueError, match="num_filters"):
    models.make_generator({"name": "rrdb", "num_filters": 3})
