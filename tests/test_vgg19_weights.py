"""VGG19 weight loading: files written by torch, h5py and numpy, checked against torch's own forward pass."""

import sys

import h5py
import jax
import numpy as np
import pytest

from restore_jax.models import vgg19, vgg19_weights

torch = pytest.importorskip("torch")

TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)  # torchvision's vgg19().features


def _torch_vgg19_features() -> "torch.nn.Sequential":
  """torchvision's vgg19().features, written out by hand (torchvision is not installed)."""
  layers, in_ch = [], 3
  for stage, (width, depth) in enumerate(zip((64, 128, 256, 512, 512), (2, 2, 4, 4, 4))):
    if stage:
      layers.append(torch.nn.MaxPool2d(2, 2))
    for _ in range(depth):
      layers += [torch.nn.Conv2d(in_ch, width, 3, padding=1), torch.nn.ReLU()]
      in_ch = width
  features = torch.nn.Sequential(*layers)
  torch.manual_seed(0)
  for module in features:
    if isinstance(module, torch.nn.Conv2d):  # He init keeps activations O(1) through 16 layers.
      torch.nn.init.kaiming_normal_(module.weight)
      torch.nn.init.normal_(module.bias, std=0.1)
  assert [i for i, m in enumerate(features) if isinstance(m, torch.nn.Conv2d)] == list(TORCH_CONV_INDICES)
  return features.eval()


@pytest.fixture(scope="module")
def torch_vgg():
  return _torch_vgg19_features()


@pytest.fixture(scope="module")
def image():
  return np.random.default_rng(0).uniform(size=(1, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def expected_params(torch_vgg):
  """What a loader must produce from torch_vgg, transposed by numpy here: OIHW -> HWIO."""
  params = {}
  for name, index in zip(vgg19.LAYER_NAMES, TORCH_CONV_INDICES):
    conv = torch_vgg[index]
    params[name] = {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                    "bias": conv.bias.detach().numpy()}
  return params


def _torch_forward(torch_vgg, image: np.ndarray, layer_index: int, *, normalize: bool = True) -> np.ndarray:
  x = image
  if normalize:  # torchvision's documented preprocessing.
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  with torch.no_grad():
    out = torch_vgg[: layer_index + 1](torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)))
  return out.numpy().transpose(0, 2, 3, 1)


def _flax_features(params, image, layers, before_activation=True):
  net = vgg19.VGG19Features(layers=layers, before_activation=before_activation)
  return jax.jit(net.apply)({"params": params}, image)


def _assert_close(got, expected, rel=1e-4):
  np.testing.assert_allclose(got, expected, rtol=rel, atol=rel * np.abs(expected).max())


def _assert_params_equal(params, expected):
  assert sorted(params) == sorted(expected)
  for name in expected:
    for leaf in ("kernel", "bias"):
      np.testing.assert_array_equal(np.asarray(params[name][leaf]), expected[name][leaf], err_msg=f"{name}/{leaf}")
      assert params[name][leaf].dtype == np.float32


# ------------------------------------------------------------------------------------------------ torch files


@pytest.fixture(scope="module", params=["zip", "legacy"])
def torch_file(request, torch_vgg, tmp_path_factory):
  """A full torchvision-style state dict (features + a small stand-in classifier) saved by torch.save."""
  state = {f"features.{k}": v for k, v in torch_vgg.state_dict().items()}
  state["classifier.0.weight"] = torch.randn(10, 8)
  state["classifier.0.bias"] = torch.randn(10)
  path = tmp_path_factory.mktemp("torch") / "vgg19.pth"
  torch.save(state, path, _use_new_zipfile_serialization=request.param == "zip")
  return path


@pytest.fixture(scope="module")
def torch_loaded(torch_file):
  saved, sys.modules["torch"] = sys.modules["torch"], None  # Any `import torch` in the loader now fails.
  try:
    return vgg19_weights.load_vgg19_params(torch_file)
  finally:
    sys.modules["torch"] = saved


def test_torch_file_loads_without_torch(torch_loaded, expected_params):
  _assert_params_equal(torch_loaded, expected_params)


def test_torch_file_features_match_torch_forward(torch_loaded, torch_vgg, image):
  features = _flax_features(torch_loaded, image, ("conv2_2", "conv5_4"))
  _assert_close(features["conv2_2"], _torch_forward(torch_vgg, image, 7))  # Before the ReLU: index 7 is conv2_2.
  _assert_close(features["conv5_4"], _torch_forward(torch_vgg, image, 34))
  after = _flax_features(torch_loaded, image, ("conv3_1",), before_activation=False)
  _assert_close(after["conv3_1"], _torch_forward(torch_vgg, image, 11))  # Index 11 is conv3_1's ReLU.


def test_torch_state_dict_with_wrong_shape_names_the_key(torch_vgg, tmp_path):
  state = {f"features.{k}": v for k, v in torch_vgg.state_dict().items()}
  state["features.10.weight"] = torch.zeros(256, 128, 5, 5)
  torch.save(state, tmp_path / "bad.pth")
  with pytest.raises(ValueError, match=r"features\.10\.weight"):
    vgg19_weights.load_vgg19_params(tmp_path / "bad.pth")


def test_torch_state_dict_missing_a_layer_names_the_key(torch_vgg, tmp_path):
  state = {f"features.{k}": v for k, v in torch_vgg.state_dict().items() if not k.startswith("34.")}
  torch.save(state, tmp_path / "vgg16ish.pth")
  with pytest.raises(ValueError, match=r"features\.34\.weight"):
    vgg19_weights.load_vgg19_params(tmp_path / "vgg16ish.pth")


def test_torch_loader_refuses_arbitrary_objects(tmp_path):
  torch.save({"features.0.weight": torch.nn.Conv2d(3, 64, 3)}, tmp_path / "module.pth")
  with pytest.raises(ValueError, match="Refusing to load torch.nn.modules.conv.Conv2d"):
    vgg19_weights.load_vgg19_params(tmp_path / "module.pth")


# ------------------------------------------------------------------------------------------------ Keras files


def _write_keras_applications_h5(path, params_bgr):
  """The layout of keras.applications' vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 (Keras 2)."""
  with h5py.File(path, "w") as f:
    layer_names = []
    for stage in range(1, 6):
      for name in [n for n in vgg19.LAYER_NAMES if n.startswith(f"conv{stage}_")]:
        keras_name = f"block{stage}_conv{name[-1]}"
        group = f.create_group(keras_name)
        group.attrs["weight_names"] = [f"{keras_name}/kernel:0".encode(), f"{keras_name}/bias:0".encode()]
        group.create_dataset(f"{keras_name}/kernel:0", data=params_bgr[name]["kernel"])
        group.create_dataset(f"{keras_name}/bias:0", data=params_bgr[name]["bias"])
        layer_names.append(keras_name.encode())
      pool = f"block{stage}_pool"
      f.create_group(pool).attrs["weight_names"] = []
      layer_names.append(pool.encode())
    f.attrs["layer_names"] = layer_names
    f.attrs["backend"] = b"tensorflow"


def _write_keras3_weights_h5(path, params_bgr):
  """The layout Keras 3's `model.save_weights("x.weights.h5")` writes: layers/<name>/vars/<i>."""
  with h5py.File(path, "w") as f:
    for name in vgg19.LAYER_NAMES:
      keras_name = "block{}_conv{}".format(*name[4:].split("_"))
      f.create_dataset(f"layers/{keras_name}/vars/0", data=params_bgr[name]["kernel"])
      f.create_dataset(f"layers/{keras_name}/vars/1", data=params_bgr[name]["bias"])
    f.create_dataset("optimizer/vars/0", data=np.zeros(()))


@pytest.fixture(scope="module", params=["applications", "keras3"])
def keras_loaded(request, expected_params, tmp_path_factory):
  """Keras-convention weights (conv1_1 takes caffe-preprocessed BGR) and what the loader makes of them."""
  path = tmp_path_factory.mktemp("keras") / "vgg19.h5"
  writer = {"applications": _write_keras_applications_h5, "keras3": _write_keras3_weights_h5}[request.param]
  writer(path, expected_params)  # Random weights: read here as if trained on BGR caffe input.
  return vgg19_weights.load_vgg19_params(path)


def test_keras_h5_layers_after_the_first_load_unchanged(keras_loaded, expected_params):
  _assert_params_equal({k: v for k, v in keras_loaded.items() if k != "conv1_1"},
                       {k: v for k, v in expected_params.items() if k != "conv1_1"})


def test_keras_first_conv_is_converted_from_caffe_bgr(keras_loaded, expected_params, image, torch_vgg):
  """The converted net on [0, 1] RGB (normalised as torchvision does) equals the Keras net on caffe input."""
  caffe = image[..., ::-1] * 255.0 - np.array([103.939, 116.779, 123.68])  # keras preprocess_input, mode="caffe".
  # torch_vgg holds the same kernels as the Keras file, so it is the Keras network; feed it caffe input.
  expected_1_1 = _torch_forward(torch_vgg, caffe, 0, normalize=False)
  expected_1_2 = _torch_forward(torch_vgg, caffe, 2, normalize=False)
  features = _flax_features(keras_loaded, image, ("conv1_1", "conv1_2"))
  # Exact away from the border, where zero padding means different things in the two input spaces.
  _assert_close(features["conv1_1"][:, 1:-1, 1:-1], expected_1_1[:, 1:-1, 1:-1])
  _assert_close(features["conv1_2"][:, 2:-2, 2:-2], expected_1_2[:, 2:-2, 2:-2])
  assert not np.allclose(np.asarray(keras_loaded["conv1_1"]["kernel"]), expected_params["conv1_1"]["kernel"])


def test_caffe_conversion_against_hand_computed_case():
  # One 1x1 "conv" with a single output that reads only the caffe B channel: out = c_B = 255 x_B - 103.939.
  kernel = np.zeros((1, 1, 3, 1))
  kernel[0, 0, 0, 0] = 1.0  # Input channel 0 is B in caffe's BGR order.
  new_kernel, new_bias = vgg19_weights.caffe_bgr_to_imagenet_rgb(kernel, np.zeros(1))
  # In normalised RGB, x_B = 0.225 n_B + 0.406, so out = 255 * 0.225 n_B + 255 * 0.406 - 103.939.
  np.testing.assert_allclose(new_kernel[0, 0, :, 0], [0.0, 0.0, 255 * 0.225], rtol=1e-6)
  np.testing.assert_allclose(new_bias, [255 * 0.406 - 103.939], rtol=1e-5)


def test_keras_h5_with_wrong_shape_names_the_layer(expected_params, tmp_path):
  bad = dict(expected_params, conv4_2={"kernel": np.zeros((3, 3, 512, 256), np.float32),
                                        "bias": np.zeros(256, np.float32)})
  _write_keras3_weights_h5(tmp_path / "bad.h5", bad)
  with pytest.raises(ValueError, match="block4_conv2"):
    vgg19_weights.load_vgg19_params(tmp_path / "bad.h5")


# ------------------------------------------------------------------------------------------------ npz files


def test_npz_round_trip_and_features(expected_params, torch_vgg, image, tmp_path):
  np.savez(tmp_path / "vgg19.npz",
           **{f"{n}/{k}": v for n, layer in expected_params.items() for k, v in layer.items()})
  params = vgg19_weights.load_vgg19_params(tmp_path / "vgg19.npz")
  _assert_params_equal(params, expected_params)
  _assert_close(_flax_features(params, image, ("conv4_4",))["conv4_4"], _torch_forward(torch_vgg, image, 25))
  vgg19_weights.save_vgg19_npz(params, tmp_path / "again" / "vgg19.npz")
  _assert_params_equal(vgg19_weights.load_vgg19_params(tmp_path / "again" / "vgg19.npz"), expected_params)


def test_npz_with_wrong_shape_names_the_key(expected_params, tmp_path):
  arrays = {f"{n}/{k}": v for n, layer in expected_params.items() for k, v in layer.items()}
  arrays["conv3_1/kernel"] = np.zeros((3, 3, 64, 256), np.float32)
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError, match="conv3_1/kernel"):
    vgg19_weights.load_vgg19_params(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------------------------ finding files


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  for var in ("XDG_CACHE_HOME", "TORCH_HOME", "KERAS_HOME"):
    monkeypatch.delenv(var, raising=False)
  return tmp_path / "home"


def test_not_found_lists_every_place_searched(empty_home):
  assert vgg19_weights.find_vgg19_weights() is None
  with pytest.raises(vgg19_weights.VGG19WeightsNotFound) as error:
    vgg19_weights.load_vgg19_params()
  message = str(error.value)
  for place in (".cache/restore_jax/vgg19.npz", ".cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth",
                ".keras/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                ".keras/models/vgg19_weights_tf_dim_ordering_tf_kernels.h5"):
    assert str(empty_home / place) in message
  assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
  assert "loss.perceptual.weights" in message
  assert isinstance(error.value, FileNotFoundError)


def test_not_found_for_an_explicit_path(empty_home):
  with pytest.raises(vgg19_weights.VGG19WeightsNotFound, match="nowhere.pth"):
    vgg19_weights.load_vgg19_params(empty_home / "nowhere.pth")


def test_search_honours_cache_environment_variables(empty_home, tmp_path, monkeypatch):
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
  keras_file = tmp_path / "keras_home" / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
  keras_file.parent.mkdir(parents=True)
  keras_file.touch()
  assert vgg19_weights.find_vgg19_weights() == keras_file
  torch_file = tmp_path / "torch_home" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
  torch_file.parent.mkdir(parents=True)
  torch_file.touch()
  assert vgg19_weights.find_vgg19_weights() == torch_file  # torchvision's file wins over Keras'.
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  npz_file = tmp_path / "xdg" / "restore_jax" / "vgg19.npz"
  npz_file.parent.mkdir(parents=True)
  npz_file.touch()
  assert vgg19_weights.find_vgg19_weights() == npz_file


def test_unknown_format_is_a_clear_error(tmp_path):
  (tmp_path / "weights.txt").write_text("not weights")
  with pytest.raises(ValueError, match="Cannot tell the format"):
    vgg19_weights.load_vgg19_params(tmp_path / "weights.txt")
