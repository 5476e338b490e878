"""Options the recipes use: the U-Net's input residual (inpainting and colorization demos) and the VGG-style
discriminator with batch norm (ESRGAN), the latter against a torch reference written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restore_jax import models
from restore_jax.models import unet, vgg_critic

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _zero_last_up(variables, bias: np.ndarray):
  """The U-Net's last transposed conv zeroed but for its bias: its pre-tanh output is `bias` everywhere."""
  params = dict(variables["params"])
  params["level0"] = {**params["level0"], "up": {"kernel": jnp.zeros_like(params["level0"]["up"]["kernel"]),
                                                "bias": jnp.asarray(bias)}}
  return {**variables, "params": params}


def _fit_in_rgb_cube(gray: np.ndarray, colour: np.ndarray) -> np.ndarray:
  """`colour` scaled by the largest t in [0, 1] keeping gray + t * colour in [0, 1] on every channel, by hand."""
  limits = np.where(colour > 0, (1 - gray) / colour, gray / -colour)
  return np.minimum(1.0, limits.min(-1, keepdims=True)) * colour


@pytest.mark.parametrize("in_ch", [4, 1])
def test_unet_input_residual_adds_tanh_to_the_image(in_ch):
  """out = image + tanh(net): the image is the first 3 channels (the mask, 4th, is not part of it), or the one
  gray channel repeated. With the net's output fixed to b, every pixel is image + tanh(b), by hand; from a gray
  image the correction's BT.601 luma is taken out, so the output's luma is the gray input's, and the colour is
  scaled into the RGB cube where it would leave it."""
  net = unet.UNetGenerator(out_ch=3, num_downs=2, num_feat=4, max_feat=8, input_residual=True)
  x = np.random.default_rng(0).random((2, 8, 8, in_ch), np.float32)
  variables = _small_random_variables(net, x)
  bias = np.array([-0.3, 0.0, 0.5], np.float32)
  apply = jax.jit(net.apply)
  out = np.asarray(apply(_zero_last_up(variables, bias), x))
  image = x[..., :3] if in_ch == 4 else np.repeat(x, 3, axis=-1)
  correction = np.tanh(bias)
  if in_ch == 1:
    correction = correction - (0.299 * correction[0] + 0.587 * correction[1] + 0.114 * correction[2])
    correction = _fit_in_rgb_cube(x[..., :1], correction)
    luma = 0.299 * out[..., 0] + 0.587 * out[..., 1] + 0.114 * out[..., 2]
    np.testing.assert_allclose(luma, x[..., 0], atol=1e-6)
  np.testing.assert_allclose(out, image + correction, atol=1e-6)
  # With small weights (DCGAN's initialisation has std 0.02) the network starts near the identity baseline.
  assert np.abs(np.asarray(apply(variables, x)) - image).mean() < 0.1


def _small_random_variables(module, x, std: float = 0.02):
  """Every parameter N(0, std), batch-norm statistics at their initial 0 and 1: DCGAN's initialisation, without
  compiling `init`."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), x)
  rng = np.random.default_rng(1)

  def sample(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name == "mean":
      return jnp.zeros(leaf.shape, leaf.dtype)
    return jnp.asarray(std * rng.standard_normal(leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def test_unet_input_residual_needs_an_image_of_the_output_channels():
  net = unet.UNetGenerator(out_ch=3, num_downs=2, num_feat=4, max_feat=8, input_residual=True)
  with pytest.raises(ValueError, match="generator.input_residual"):
    jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 8, 8, 2)))


@pytest.mark.parametrize("factor", [2, 4])
def test_colour_downscale_matches_torch_pooling_and_bilinear_upsampling(factor):
  """From a gray input the colour correction is tanh(h) averaged over factor x factor blocks and upsampled
  bilinearly (torch's avg_pool2d and interpolate, half-pixel centres), with its luma taken out: the output's
  luma is still the input's."""
  from restore_jax.models import layers
  rng = np.random.default_rng(2)
  x = rng.random((2, 16, 12, 1), np.float32)
  h = rng.normal(size=(2, 16, 12, 3)).astype(np.float32)
  out = np.asarray(jax.jit(lambda x, h: layers.residual_output(x, h, 3, factor))(x, h))
  t = torch.tanh(torch.from_numpy(h).permute(0, 3, 1, 2).double())
  low = F.interpolate(F.avg_pool2d(t, factor), scale_factor=factor, mode="bilinear", align_corners=False)
  low = low.permute(0, 2, 3, 1).numpy()
  luma = 0.299 * low[..., 0] + 0.587 * low[..., 1] + 0.114 * low[..., 2]
  colour = _fit_in_rgb_cube(x, low - luma[..., None])
  np.testing.assert_allclose(out, np.repeat(x, 3, axis=-1) + colour, atol=1e-5)
  out_luma = 0.299 * out[..., 0] + 0.587 * out[..., 1] + 0.114 * out[..., 2]
  np.testing.assert_allclose(out_luma, x[..., 0], atol=1e-5)
  # No detail finer than the blocks: the full-resolution correction differs.
  full = np.asarray(layers.residual_output(x, h, 3, 1))
  assert np.abs(full - out).mean() > 0.1


def test_colorization_output_stays_in_gamut_with_the_input_luma_and_hue():
  """A colour that would leave the RGB cube is desaturated until it fits, not clipped: by hand, gray 0.9 plus the
  luma-free colour c = (0.2, -0.1, 0) - 0.0011 = (0.1989, -0.1011, -0.0011) leaves the cube on the red channel
  (1.0989), so t = 0.1 / 0.1989 and the output is 0.9 + t c, red exactly 1; gray 0.5 with the same colour fits
  and is unchanged."""
  from restore_jax.models import layers
  colour = np.array([0.1989, -0.1011, -0.0011])
  assert abs(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) < 1e-12
  h = np.arctanh(colour).astype(np.float32)[None, None, None, :].repeat(2, axis=2)
  x = np.array([0.9, 0.5], np.float32)[None, None, :, None]
  out = np.asarray(layers.residual_output(x, h, 3))
  np.testing.assert_allclose(out[0, 0, 0], 0.9 + colour * (0.1 / colour[0]), atol=1e-6)
  np.testing.assert_allclose(out[0, 0, 1], 0.5 + colour, atol=1e-6)
  assert out[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-6)
  # Random corrections: always in the cube, luma kept; the colour only shrinks along its own direction.
  rng = np.random.default_rng(3)
  x = rng.random((2, 8, 8, 1), np.float32)
  h = (3 * rng.normal(size=(2, 8, 8, 3))).astype(np.float32)
  out = np.asarray(layers.residual_output(x, h, 3))
  assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
  np.testing.assert_allclose(out @ np.array([0.299, 0.587, 0.114]), x[..., 0], atol=1e-5)
  full = np.tanh(h) - (np.tanh(h) @ np.array([0.299, 0.587, 0.114]))[..., None]
  kept = out - x
  cosine = (kept * full).sum(-1) / (np.linalg.norm(kept, axis=-1) * np.linalg.norm(full, axis=-1) + 1e-12)
  assert np.all(cosine[np.linalg.norm(kept, axis=-1) > 1e-4] > 0.9999)
  assert np.all(np.linalg.norm(kept, axis=-1) <= np.linalg.norm(full, axis=-1) + 1e-6)


def test_colour_downscale_errors_name_the_key():
  from restore_jax.models import layers
  with pytest.raises(ValueError, match="generator.colour_downscale.*colorization"):
    layers.residual_output(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)), 3, 2)
  with pytest.raises(ValueError, match="generator.colour_downscale=3 must divide"):
    layers.residual_output(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 8, 8, 3)), 3, 3)
  # Inference pads images up to a multiple of both the halvings and the colour blocks.
  assert unet.UNetGenerator(num_downs=2, input_residual=True, colour_downscale=8).size_multiple == 8


def _conv_params(k: int, cin: int, cout: int, bias: bool = True) -> int:
  return k * k * cin * cout + (cout if bias else 0)


def test_vgg_critic_batch_norm_parameter_count_by_hand():
  """ESRGAN's discriminator for 128 px: the first conv has a bias, the nine others a batch norm (scale and shift
  as parameters, mean and variance as statistics)."""
  widths = [64, 128, 256, 512, 512]
  convs, norms, cin = 0, 0, 3
  for stage, width in enumerate(widths):
    convs += _conv_params(3, cin, width, bias=stage == 0) + _conv_params(4, width, width, bias=False)
    norms += 2 * width * (2 if stage else 1)
    cin = width
  dense = 512 * 4 * 4 * 100 + 100 + 100 + 1
  critic = vgg_critic.VGGCritic(num_feat=64, input_size=128, norm="batch")
  shapes = jax.eval_shape(critic.init, jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
  assert sum(leaf.size for leaf in jax.tree.leaves(shapes["params"])) == convs + norms + dense
  assert sum(leaf.size for leaf in jax.tree.leaves(shapes["batch_stats"])) == norms


class TorchVGGStyleDiscriminator(torch.nn.Module):
  """SRGAN / ESRGAN's discriminator: per stage a 3x3 conv and a 4x4 stride-2 conv, batch norm after each but the
  very first conv (those convs have no bias), leaky ReLU 0.2, then Linear(100), leaky ReLU, Linear(1)."""

  def __init__(self, num_feat: int, input_size: int):
    super().__init__()
    nn_ = torch.nn
    widths = [num_feat * m for m in (1, 2, 4, 8, 8)]
    self.convs, self.norms = nn_.ModuleList(), nn_.ModuleList()
    cin = 3
    for stage, width in enumerate(widths):
      self.convs.append(nn_.Conv2d(cin, width, 3, 1, 1, bias=stage == 0))
      self.norms.append(nn_.BatchNorm2d(width) if stage else nn_.Identity())
      self.convs.append(nn_.Conv2d(width, width, 4, 2, 1, bias=False))
      self.norms.append(nn_.BatchNorm2d(width))
      cin = width
    self.linear1 = nn_.Linear(widths[-1] * (input_size // 32) ** 2, 100)
    self.linear2 = nn_.Linear(100, 1)

  def forward(self, x):
    for conv, norm in zip(self.convs, self.norms):
      x = F.leaky_relu(norm(conv(x)), 0.2)
    x = x.permute(0, 2, 3, 1).flatten(1)  # Flatten in HWC order, as the Flax model does.
    return self.linear2(F.leaky_relu(self.linear1(x), 0.2))[:, 0]


def _random_critic_variables(critic, x, seed=0):
  shapes = jax.eval_shape(critic.init, jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def sample(path, leaf):
    name = path[-1].key
    if name == "kernel":
      value = np.sqrt(2.0 / np.prod(leaf.shape[:-1])) * rng.standard_normal(leaf.shape)
    elif name in ("scale", "var"):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:
      value = 0.2 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def _load_torch(reference, variables):
  params, stats = variables["params"], variables["batch_stats"]
  t = lambda a: torch.from_numpy(np.array(a))
  with torch.no_grad():
    for stage in range(5):
      for j in range(2):
        conv, norm = reference.convs[2 * stage + j], reference.norms[2 * stage + j]
        flax_conv = params[f"conv{stage}_{j}"]
        conv.weight.copy_(t(np.asarray(flax_conv["kernel"]).transpose(3, 2, 0, 1)))
        if conv.bias is not None:
          conv.bias.copy_(t(flax_conv["bias"]))
        else:
          assert "bias" not in flax_conv
        if isinstance(norm, torch.nn.BatchNorm2d):
          name = f"norm{stage}_{j}"
          norm.weight.copy_(t(params[name]["scale"]))
          norm.bias.copy_(t(params[name]["bias"]))
          norm.running_mean.copy_(t(stats[name]["mean"]))
          norm.running_var.copy_(t(stats[name]["var"]))
    for name in ("linear1", "linear2"):
      getattr(reference, name).weight.copy_(t(np.asarray(params[name]["kernel"]).T))
      getattr(reference, name).bias.copy_(t(params[name]["bias"]))


def test_vgg_critic_batch_norm_matches_torch_in_eval_and_train_mode():
  critic = models.make_discriminator({"name": "vgg_critic", "num_feat": 4, "input_size": 32, "norm": "batch"})
  x = jax.random.uniform(jax.random.key(3), (3, 32, 32, 3))
  variables = _random_critic_variables(critic, x)
  reference = TorchVGGStyleDiscriminator(4, 32).double()
  _load_torch(reference, variables)
  x_torch = torch.from_numpy(np.asarray(x, np.float64).transpose(0, 3, 1, 2).copy())

  scores = jax.jit(critic.apply)(variables, x)
  with torch.no_grad():
    expected = reference.eval()(x_torch).numpy()
  assert scores.shape == (3,) and np.std(expected) > 1e-3
  np.testing.assert_allclose(np.asarray(scores), expected, rtol=1e-4, atol=1e-4)

  train_scores, updates = jax.jit(lambda v, x: critic.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  with torch.no_grad():
    expected_train = reference.train()(x_torch).numpy()
  np.testing.assert_allclose(np.asarray(train_scores), expected_train, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["norm2_1"]["mean"]),
                             reference.norms[5].running_mean.numpy(), rtol=1e-4, atol=1e-5)


def test_vgg_critic_rejects_unknown_norm():
  with pytest.raises(ValueError, match="discriminator.norm"):
    vgg_critic.VGGCritic(num_feat=4, input_size=32, norm="layer")
