"""The image translator's input residual (the deblurring demo): out = image + tanh(net), checked by hand with the
network's last transposed conv fixed to a constant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restore_jax.models import translator


def _with_constant_output(variables, last: str, bias: np.ndarray):
  """The translator's last transposed conv zeroed but for its bias: its pre-tanh output is `bias` everywhere."""
  params = dict(variables["params"])
  params[last] = {"kernel": jnp.zeros_like(params[last]["kernel"]), "bias": jnp.asarray(bias)}
  return {**variables, "params": params}


@pytest.mark.parametrize("in_ch", [3, 1])
def test_translator_input_residual_adds_tanh_to_the_image(in_ch):
  """The image is the input itself, or its gray channel repeated; with the output fixed to b, image + tanh(b),
  less the BT.601 luma of tanh(b) from a gray image (whose luma the output keeps), that colour scaled down where
  it would leave the RGB cube (by hand: the largest t in [0, 1] keeping every channel in [0, 1])."""
  net = translator.ImageTranslator(out_ch=3, num_downs=2, num_feat=4, input_residual=True)
  x = np.random.default_rng(0).random((2, 8, 8, in_ch), np.float32)
  variables = net.init(jax.random.key(0), x)
  bias = np.array([-0.3, 0.0, 0.5], np.float32)
  out = np.asarray(net.apply(_with_constant_output(variables, "dec1", bias), x))
  image = x if in_ch == 3 else np.repeat(x, 3, axis=-1)
  correction = np.tanh(bias)
  if in_ch == 1:
    correction = correction - (0.299 * correction[0] + 0.587 * correction[1] + 0.114 * correction[2])
    limits = np.where(correction > 0, (1 - x) / correction, x / -correction)
    correction = np.minimum(1.0, limits.min(-1, keepdims=True)) * correction
  np.testing.assert_allclose(out, image + correction, atol=1e-6)


def test_translator_without_input_residual_maps_tanh_to_unit_range():
  net = translator.ImageTranslator(out_ch=3, num_downs=2, num_feat=4)
  x = np.random.default_rng(0).random((2, 8, 8, 3), np.float32)
  bias = np.array([-0.3, 0.0, 0.5], np.float32)
  out = np.asarray(net.apply(_with_constant_output(net.init(jax.random.key(0), x), "dec1", bias), x))
  np.testing.assert_allclose(out, np.broadcast_to((np.tanh(bias) + 1) / 2, out.shape), atol=1e-6)


def test_translator_input_residual_needs_an_image_of_the_output_channels():
  net = translator.ImageTranslator(out_ch=3, num_downs=2, num_feat=4, input_residual=True)
  with pytest.raises(ValueError, match="generator.input_residual"):
    jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 8, 8, 2)))
