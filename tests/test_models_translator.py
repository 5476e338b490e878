"""The encoder-decoder image translator (Liu Shiqiang's lsqpku/img2img, after DCGAN) against a TensorFlow network
written here from the source's description: the source's own framework, with its "SAME" padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restore_jax import models
from restore_jax.models import translator

tf = pytest.importorskip("tensorflow")


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _random_variables(module, x, seed: int = 0):
  """He-scaled kernels, batch-norm scales, shifts and running statistics away from 1 and 0."""
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
    else:
      value = 0.2 * rng.standard_normal(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(sample, shapes)


def _tf_translator(variables, x: np.ndarray, num_downs: int) -> np.ndarray:
  """DCGAN's discriminator as encoder (5x5 stride-2 convs, batch norm from the second, leaky ReLU 0.2) and its
  generator as decoder (5x5 stride-2 transposed convs, batch norm and ReLU, tanh last), in TensorFlow ops, with
  batch norm in inference mode. Images enter in [-1, 1] and leave in [0, 1]."""
  params, stats = variables["params"], variables["batch_stats"]

  def batch_norm(h, name):
    return tf.nn.batch_normalization(h, stats[name]["mean"], stats[name]["var"], params[name]["bias"],
                                     params[name]["scale"], variance_epsilon=1e-5)

  h = tf.constant(2.0 * x - 1.0)
  for i in range(num_downs):
    h = tf.nn.conv2d(h, np.asarray(params[f"enc{i}"]["kernel"]), strides=2, padding="SAME")
    h = h + params["enc0"]["bias"] if i == 0 else batch_norm(h, f"enc{i}_norm")
    h = tf.nn.leaky_relu(h, 0.2)
  for i in range(num_downs):
    kernel = np.asarray(params[f"dec{i}"]["kernel"])
    # tf.nn.conv2d_transpose is the adjoint of tf.nn.conv2d: its filter is (h, w, out, in) and, applied as a
    # Flax ConvTranspose kernel (h, w, in, out), spatially flipped.
    tf_filter = np.ascontiguousarray(kernel[::-1, ::-1].transpose(0, 1, 3, 2))
    n, height, width, _ = h.shape
    h = tf.nn.conv2d_transpose(h, tf_filter, (n, 2 * height, 2 * width, kernel.shape[-1]), strides=2,
                               padding="SAME")
    if i == num_downs - 1:
      return ((tf.tanh(h + params[f"dec{i}"]["bias"]) + 1.0) / 2.0).numpy()
    h = tf.nn.relu(batch_norm(h, f"dec{i}_norm"))


def test_translator_full_size_parameter_count_by_hand():
  """DCGAN widths 64-128-256-512 down, 256-128-64-3 up; 5x5 kernels; batch norm replaces the conv biases."""
  hand_count = (
      25 * 3 * 64 + 64  # enc0: no norm, with bias.
      + 25 * 64 * 128 + 2 * 128  # enc1 + batch norm scale and shift.
      + 25 * 128 * 256 + 2 * 256
      + 25 * 256 * 512 + 2 * 512
      + 25 * 512 * 256 + 2 * 256  # dec0.
      + 25 * 256 * 128 + 2 * 128
      + 25 * 128 * 64 + 2 * 64
      + 25 * 64 * 3 + 3)  # dec3: to the image, with bias, then tanh.
  assert hand_count == 8_613_955
  net = translator.ImageTranslator()
  variables = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert _count(variables["params"]) == hand_count
  assert [variables["params"][f"enc{i}"]["kernel"].shape for i in range(4)] == [
      (5, 5, 3, 64), (5, 5, 64, 128), (5, 5, 128, 256), (5, 5, 256, 512)]
  assert _count(variables["batch_stats"]) == 2 * (128 + 256 + 512 + 256 + 128 + 64)


@pytest.fixture(scope="module")
def tiny_translator():
  """Gray in, RGB out (colorization's geometry), three levels, 24 px."""
  net = translator.ImageTranslator(out_ch=3, num_downs=3, num_feat=4)
  x = jax.random.uniform(jax.random.key(1), (2, 24, 24, 1))
  variables = _random_variables(net, x)
  eval_apply = jax.jit(net.apply)
  train_apply = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"]))
  return net, variables, x, eval_apply, train_apply


def test_translator_matches_tensorflow_reference_in_eval_mode(tiny_translator):
  _, variables, x, eval_apply, _ = tiny_translator
  out = np.asarray(eval_apply(variables, x))
  expected = _tf_translator(variables, np.asarray(x), num_downs=3)
  assert out.shape == expected.shape == (2, 24, 24, 3) and out.dtype == np.float32
  assert expected.std() > 0.05
  np.testing.assert_allclose(out, expected, atol=2e-5)
  assert 0.0 <= out.min() and out.max() <= 1.0


def test_translator_train_mode_normalises_with_batch_statistics(tiny_translator):
  _, variables, x, eval_apply, train_apply = tiny_translator
  out, updates = train_apply(variables, x)
  assert np.abs(np.asarray(out) - np.asarray(eval_apply(variables, x))).max() > 1e-2
  # enc1's running mean moved 0.1 of the way to the batch mean of enc1's conv output (TensorFlow computes it).
  h = tf.nn.leaky_relu(tf.nn.conv2d(2.0 * np.asarray(x) - 1.0, np.asarray(variables["params"]["enc0"]["kernel"]),
                                    2, "SAME") + variables["params"]["enc0"]["bias"], 0.2)
  h = tf.nn.conv2d(h, np.asarray(variables["params"]["enc1"]["kernel"]), 2, "SAME").numpy()
  old, new = variables["batch_stats"]["enc1_norm"], updates["batch_stats"]["enc1_norm"]
  np.testing.assert_allclose(np.asarray(new["mean"]), 0.9 * np.asarray(old["mean"]) + 0.1 * h.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  # The biased variance: the one the batch was normalised with.
  np.testing.assert_allclose(np.asarray(new["var"]), 0.9 * np.asarray(old["var"]) + 0.1 * h.var(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)


def test_translator_bfloat16_runs_with_float32_params_and_output(tiny_translator):
  _, variables, x, eval_apply, _ = tiny_translator
  net = translator.ImageTranslator(out_ch=3, num_downs=3, num_feat=4, dtype=jnp.bfloat16)
  assert {leaf.dtype for leaf in jax.tree.leaves(jax.eval_shape(net.init, jax.random.key(0), x))} == {
      jnp.dtype(jnp.float32)}
  low = jax.jit(net.apply)(variables, x)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(low), np.asarray(eval_apply(variables, x)), atol=0.05)


def test_translator_options_and_errors():
  x = jnp.zeros((1, 16, 16, 3))
  for norm, collections in (("batch", {"params", "batch_stats"}), ("instance", {"params"}), ("none", {"params"})):
    variables = jax.eval_shape(translator.ImageTranslator(num_downs=2, num_feat=2, norm=norm).init,
                               jax.random.key(0), x)
    assert set(variables) == collections
  # Widths stop at 8 x num_feat, as DCGAN's do: 2, 4, 8, 16, 16.
  variables = jax.eval_shape(translator.ImageTranslator(num_downs=5, num_feat=2).init, jax.random.key(0),
                             jnp.zeros((1, 32, 32, 3)))
  assert [variables["params"][f"enc{i}"]["kernel"].shape[-1] for i in range(5)] == [2, 4, 8, 16, 16]
  with pytest.raises(ValueError, match="multiples of 16"):
    jax.eval_shape(translator.ImageTranslator(num_downs=4, num_feat=2).init, jax.random.key(0),
                   jnp.zeros((1, 24, 24, 3)))
  with pytest.raises(ValueError, match="generator.norm"):
    translator.ImageTranslator(norm="batchnorm")
  with pytest.raises(ValueError, match="generator.num_downs"):
    translator.ImageTranslator(num_downs=0)
  built = models.make_generator({"name": "translator", "num_downs": 3, "out_ch": 1})
  assert isinstance(built, translator.ImageTranslator) and built.out_ch == 1
