"""FID: the Fréchet distance against scipy, the Inception against a torch implementation of pytorch-fid's blocks
written here (on random weights saved in the real file format), and the weight-file mapping on the real shapes."""

import warnings

import numpy as np
import pytest
import scipy.linalg

from restore_jax import perceptual
from restore_jax.perceptual import MetricUnavailable, fid, inception, inception_weights

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
  """torch's CPU convs on two threads crawl when the cores are shared (10x here); one thread is plenty."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


DIV = 8  # The narrow copy the numeric checks run: every width / 8, so a forward pass is cheap.


# ----------------------------------------------------------------------------------------------------------------
# The Fréchet distance.


def _random_covariance(rng, dim, samples):
  features = rng.normal(size=(samples, dim)) @ rng.normal(size=(dim, dim))
  return np.cov(features, rowvar=False)


def test_psd_square_root_matches_scipy():
  rng = np.random.default_rng(0)
  cov = _random_covariance(rng, 30, 100)
  root = fid.sqrtm_psd(cov)
  np.testing.assert_allclose(root, scipy.linalg.sqrtm(cov).real, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(root @ root, cov, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("samples", [200, 12])  # Full rank, and rank 11 (12 samples in 40 dimensions).
def test_frechet_distance_matches_the_definition(samples):
  rng = np.random.default_rng(samples)
  mu_1, mu_2 = rng.normal(size=40), rng.normal(size=40)
  sigma_1, sigma_2 = _random_covariance(rng, 40, samples), _random_covariance(rng, 40, samples)
  with warnings.catch_warnings():  # sqrtm warns that the rank-deficient product is singular.
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    scipy_trace = np.trace(scipy.linalg.sqrtm(sigma_1 @ sigma_2)).real
  # The same trace from the (real, non-negative) eigenvalues of the product, its zero ones dropped.
  eigenvalues = np.linalg.eigvals(sigma_1 @ sigma_2)
  eigen_trace = np.sum(np.sqrt(eigenvalues[np.abs(eigenvalues) > 1e-9 * np.abs(eigenvalues).max()].real))
  distance = lambda trace: np.sum((mu_1 - mu_2)**2) + np.trace(sigma_1) + np.trace(sigma_2) - 2 * trace
  ours = fid.frechet_distance(mu_1, sigma_1, mu_2, sigma_2)
  assert ours == pytest.approx(distance(eigen_trace), rel=1e-10)
  # scipy's sqrtm of the singular product is itself off by ~4e-8 (relative) in the rank-deficient case.
  assert ours == pytest.approx(distance(scipy_trace), rel=1e-12 if samples > 40 else 1e-7)
  assert abs(fid.frechet_distance(mu_1, sigma_1, mu_1, sigma_1)) < 1e-9 * np.trace(sigma_1)


def test_frechet_distance_of_diagonal_gaussians_by_hand():
  # Commuting covariances: Tr(S1 + S2 - 2 (S1 S2)^(1/2)) = sum (sqrt(a_i) - sqrt(b_i))^2.
  mu_1, mu_2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
  expected = 1 + 0 + 4 + (1 - 2)**2 + 0 + (3 - 1)**2
  assert fid.frechet_distance(mu_1, np.diag(a), mu_2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# A torch FID Inception, written from pytorch-fid's FIDInceptionA/C/E_1/E_2 and torchvision's Inception-v3.


class BasicConv(nn.Module):
  def __init__(self, cin, cout, **kwargs):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
    self.bn = nn.BatchNorm2d(cout, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class TorchA(nn.Module):
  def __init__(self, cin, pool, d):
    super().__init__()
    self.branch1x1 = BasicConv(cin, 64 // d, kernel_size=1)
    self.branch5x5_1 = BasicConv(cin, 48 // d, kernel_size=1)
    self.branch5x5_2 = BasicConv(48 // d, 64 // d, kernel_size=5, padding=2)
    self.branch3x3dbl_1 = BasicConv(cin, 64 // d, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv(64 // d, 96 // d, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv(96 // d, 96 // d, kernel_size=3, padding=1)
    self.branch_pool = BasicConv(cin, pool // d, kernel_size=1)

  def forward(self, x):
    pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                      self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      self.branch_pool(pooled)], 1)


class TorchB(nn.Module):
  def __init__(self, cin, d):
    super().__init__()
    self.branch3x3 = BasicConv(cin, 384 // d, kernel_size=3, stride=2)
    self.branch3x3dbl_1 = BasicConv(cin, 64 // d, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv(64 // d, 96 // d, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv(96 // d, 96 // d, kernel_size=3, stride=2)

  def forward(self, x):
    return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      F.max_pool2d(x, 3, stride=2)], 1)


class TorchC(nn.Module):
  def __init__(self, cin, c7, d):
    super().__init__()
    c7 //= d
    self.branch1x1 = BasicConv(cin, 192 // d, kernel_size=1)
    self.branch7x7_1 = BasicConv(cin, c7, kernel_size=1)
    self.branch7x7_2 = BasicConv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7_3 = BasicConv(c7, 192 // d, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = BasicConv(cin, c7, kernel_size=1)
    self.branch7x7dbl_2 = BasicConv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = BasicConv(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = BasicConv(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = BasicConv(c7, 192 // d, kernel_size=(1, 7), padding=(0, 3))
    self.branch_pool = BasicConv(cin, 192 // d, kernel_size=1)

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = x
    for i in range(1, 6):
      bd = getattr(self, f"branch7x7dbl_{i}")(bd)
    pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(pooled)], 1)


class TorchD(nn.Module):
  def __init__(self, cin, d):
    super().__init__()
    self.branch3x3_1 = BasicConv(cin, 192 // d, kernel_size=1)
    self.branch3x3_2 = BasicConv(192 // d, 320 // d, kernel_size=3, stride=2)
    self.branch7x7x3_1 = BasicConv(cin, 192 // d, kernel_size=1)
    self.branch7x7x3_2 = BasicConv(192 // d, 192 // d, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv(192 // d, 192 // d, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv(192 // d, 192 // d, kernel_size=3, stride=2)

  def forward(self, x):
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f"branch7x7x3_{i}")(b7)
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class TorchE(nn.Module):
  def __init__(self, cin, max_pool, d):
    super().__init__()
    self.max_pool = max_pool
    self.branch1x1 = BasicConv(cin, 320 // d, kernel_size=1)
    self.branch3x3_1 = BasicConv(cin, 384 // d, kernel_size=1)
    self.branch3x3_2a = BasicConv(384 // d, 384 // d, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3_2b = BasicConv(384 // d, 384 // d, kernel_size=(3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv(cin, 448 // d, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv(448 // d, 384 // d, kernel_size=3, padding=1)
    self.branch3x3dbl_3a = BasicConv(384 // d, 384 // d, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv(384 // d, 384 // d, kernel_size=(3, 1), padding=(1, 0))
    self.branch_pool = BasicConv(cin, 192 // d, kernel_size=1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
    if self.max_pool:  # pytorch-fid's FIDInceptionE_2 (Mixed_7c).
      pooled = F.max_pool2d(x, 3, stride=1, padding=1)
    else:
      pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class TorchFIDInception(nn.Module):
  def __init__(self, d=1):
    super().__init__()
    self.Conv2d_1a_3x3 = BasicConv(3, 32 // d, kernel_size=3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv(32 // d, 32 // d, kernel_size=3)
    self.Conv2d_2b_3x3 = BasicConv(32 // d, 64 // d, kernel_size=3, padding=1)
    self.Conv2d_3b_1x1 = BasicConv(64 // d, 80 // d, kernel_size=1)
    self.Conv2d_4a_3x3 = BasicConv(80 // d, 192 // d, kernel_size=3)
    self.Mixed_5b = TorchA(192 // d, 32, d)
    self.Mixed_5c = TorchA(256 // d, 64, d)
    self.Mixed_5d = TorchA(288 // d, 64, d)
    self.Mixed_6a = TorchB(288 // d, d)
    self.Mixed_6b = TorchC(768 // d, 128, d)
    self.Mixed_6c = TorchC(768 // d, 160, d)
    self.Mixed_6d = TorchC(768 // d, 160, d)
    self.Mixed_6e = TorchC(768 // d, 192, d)
    self.Mixed_7a = TorchD(768 // d, d)
    self.Mixed_7b = TorchE(1280 // d, False, d)
    self.Mixed_7c = TorchE(2048 // d, True, d)
    self.fc = nn.Linear(2048 // d, 1008)  # In the real file; unused for pool3.

  def forward(self, images):
    """NCHW in [0, 1], any size -> pool3 features, as pytorch-fid's InceptionV3 (resize, 2x - 1)."""
    x = 2 * F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) - 1
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, 3, stride=2)
    x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return x.mean(dim=(2, 3))


def _randomised(model):
  """He-initialised convs and non-trivial batch-norm statistics, so every parameter matters."""
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.Conv2d):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in)**0.5)
      elif isinstance(module, nn.BatchNorm2d):
        n = module.num_features
        module.weight.copy_(1 + 0.2 * torch.randn(n, generator=generator))
        module.bias.copy_(0.2 * torch.randn(n, generator=generator))
        module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
        module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
  return model.eval()


@pytest.fixture(scope="module")
def torch_net():
  return _randomised(TorchFIDInception(DIV))


@pytest.fixture(scope="module")
def saved_weights(torch_net, tmp_path_factory):
  path = tmp_path_factory.mktemp("fid") / inception_weights.WEIGHTS_FILE
  torch.save(torch_net.state_dict(), path)
  return path


@pytest.fixture(scope="module")
def variables(saved_weights):
  return inception_weights.load_fid_inception(saved_weights, width_divisor=DIV)


def _images(seed, sizes):
  rng = np.random.default_rng(seed)
  return [rng.uniform(size=(h, w, 3)).astype(np.float32) for h, w in sizes]


def _torch_features(torch_net, images):
  with torch.no_grad():
    return np.concatenate([torch_net(torch.from_numpy(im).permute(2, 0, 1)[None]).numpy() for im in images])


# ----------------------------------------------------------------------------------------------------------------


def test_weight_file_mapping_covers_the_real_network_with_the_right_shapes():
  with torch.device("meta"):  # Full size without allocating its 95 MB.
    state = TorchFIDInception(1).state_dict()
  expected = {k: tuple(v.shape) for k, v in state.items()
              if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
  mapping = inception_weights.torch_key_map(1)
  assert sorted(mapping) == sorted(expected)
  for key, (path, shape) in mapping.items():
    torch_shape = expected[key]
    assert (tuple(torch_shape[i] for i in (2, 3, 1, 0)) if path[-1] == "kernel" else torch_shape) == shape, key
  assert inception.variable_shapes(1)["params"]["Mixed_7c"]["branch_pool"]["conv"]["kernel"] == (1, 1, 2048, 192)


def test_resize_matches_torch_bilinear_up_and_down():
  for size in ((40, 57), (400, 333)):
    image = _images(1, [size])[0]
    expected = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], size=(299, 299), mode="bilinear",
                             align_corners=False)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(np.asarray(inception.resize_to_input(image[None]))[0], expected, atol=2e-6)


def test_pool3_features_match_torch_on_the_loaded_weights(torch_net, variables):
  images = _images(2, [(64, 80), (64, 80)])  # Batch 2 throughout: the network compiles once.
  expected = _torch_features(torch_net, images)
  ours = np.asarray(fid.pool3_features(variables, np.stack(images), width_divisor=DIV))
  assert ours.shape == (2, 2048 // DIV)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_accumulator_gives_the_fid_of_torch_features(torch_net, variables):
  # Five pairs of mixed sizes with batches of 2: two full batches and a padded one per set.
  restored = _images(3, [(50, 60), (70, 40), (50, 60), (64, 80), (70, 40)])
  clean = _images(4, [(50, 60), (70, 40), (64, 80), (64, 80), (50, 60)])
  accumulator = fid.FIDAccumulator(variables, batch_size=2, round_to_uint8=False, width_divisor=DIV)
  for r, c in zip(restored, clean):
    accumulator.add(r, c)
  assert len(accumulator) == 5
  a, b = _torch_features(torch_net, restored), _torch_features(torch_net, clean)
  sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  with warnings.catch_warnings():  # 5 images in 256 dimensions: the product is singular.
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    expected = (np.sum((a.mean(0) - b.mean(0))**2) + np.trace(sigma_a) + np.trace(sigma_b)
                - 2 * np.trace(scipy.linalg.sqrtm(sigma_a @ sigma_b)).real)
  assert accumulator.result() == pytest.approx(expected, rel=1e-4)

  same = fid.FIDAccumulator(variables, batch_size=2, width_divisor=DIV)
  for image in clean:
    same.add(image, image)
  assert abs(same.result()) < 1e-9 * np.trace(sigma_b)


def test_fid_needs_two_images():
  with pytest.raises(ValueError, match="at least 2 images"):
    fid.feature_statistics(np.zeros((1, 8)))


def test_missing_weights_say_where_to_put_the_file(tmp_path, monkeypatch):
  monkeypatch.setenv("TORCH_HOME", str(tmp_path))
  perceptual._cached_fid_variables.cache_clear()
  with pytest.raises(MetricUnavailable, match=r"pt_inception-2015-12-05-6726825d\.pth.*hub/checkpoints"):
    perceptual.make_metric("fid")
  with pytest.raises(MetricUnavailable, match="elsewhere.pth"):
    perceptual.make_metric("fid", weights_path=tmp_path / "elsewhere.pth")
  with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
    perceptual.make_metric("fid", batch_size=0)


def test_rejects_a_file_that_is_not_the_fid_inception(tmp_path, torch_net):
  state = {k: v for k, v in torch_net.state_dict().items() if not k.startswith("Mixed_7c.branch_pool")}
  torch.save(state, tmp_path / "partial.pth")
  with pytest.raises(ValueError, match="Mixed_7c.branch_pool"):
    inception_weights.load_fid_inception(tmp_path / "partial.pth", width_divisor=DIV)
  with pytest.raises(ValueError, match="has shape"):  # Narrow weights where the real network is expected.
    inception_weights.load_fid_inception(tmp_path / "partial.pth", width_divisor=1)
