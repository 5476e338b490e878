"""Pretrained VGG19 conv weights from the files people already have, into VGG19Features' param tree.

Formats (chosen by extension, else by content):
  * torchvision state dict (.pth / .pt), read without torch: both the zip format (torch >= 1.6) and the older
    pickle stream that torchvision's own vgg19-dcbb9e9d.pth uses. Classifier weights are ignored.
  * Keras HDF5 (.h5): keras.applications' weight file, or a file saved by `save_weights` (Keras 2 or 3).
  * .npz with keys "conv1_1/kernel", "conv1_1/bias", ... (HWIO), e.g. written by `save_vgg19_npz`.

Input conventions differ: torchvision's VGG19 expects RGB in [0, 1] normalised by the ImageNet mean and std;
keras.applications' VGG19 (converted from Caffe) expects BGR in [0, 255] minus a per-channel mean, no std.
Every loaded tree here follows the torchvision convention, so `VGG19Features(normalize_input=True)` is right
for all of them: Keras' conv1_1 is rewritten to take normalised RGB (see `caffe_bgr_to_imagenet_rgb`).
"""

import collections
import os
import pathlib
import pickle
import re
import zipfile
from typing import Any, NamedTuple

import h5py
import jax.numpy as jnp
import numpy as np

from restore_jax.models import vgg19

TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
CONFIG_KEY = "loss.perceptual.weights"

# torchvision's vgg19().features is a Sequential of conv, ReLU and max-pool modules; these are the conv indices.
TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)

# keras.applications.imagenet_utils.preprocess_input(mode="caffe"): per-channel mean of BGR in [0, 255].
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

_TORCH_EXTENSIONS = (".pth", ".pt", ".bin", ".ckpt")
_H5_EXTENSIONS = (".h5", ".hdf5", ".keras")


def default_search_paths() -> list[pathlib.Path]:
  """Where VGG19 weights usually sit, most convenient format first, honouring the caches' env variables."""
  home = pathlib.Path.home()
  xdg_cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", home / ".cache"))
  torch_home = pathlib.Path(os.environ.get("TORCH_HOME", xdg_cache / "torch"))
  keras_home = pathlib.Path(os.environ.get("KERAS_HOME", home / ".keras"))
  return [
      xdg_cache / "restore_jax" / "vgg19.npz",
      torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth",
      keras_home / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
      keras_home / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
  ]


DEFAULT_SEARCH_PATHS: list[pathlib.Path] = default_search_paths()


class VGG19WeightsNotFound(FileNotFoundError):
  """No VGG19 weights file where we looked; the message says where that was and how to get one."""

  def __init__(self, searched: list[pathlib.Path]):
    places = "\n".join(f"  {p}" for p in searched)
    super().__init__(
        "No VGG19 weights found (needed by the perceptual loss). Searched:\n"
        f"{places}\n"
        "Get one of them, on a machine with internet access, e.g.:\n"
        f"  torchvision: download {TORCHVISION_URL}\n"
        f"    to {default_search_paths()[1]}\n"
        "  Keras: python -c \"import keras; keras.applications.VGG19(weights='imagenet', include_top=False)\"\n"
        "    (writes ~/.keras/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5)\n"
        f"or point at a file with --config.{CONFIG_KEY}=/path/to/weights (.pth, .h5 or .npz), "
        f"or set --config.loss.terms.perceptual=0 to train without the perceptual loss.")
    self.searched = searched


def find_vgg19_weights(path: str | os.PathLike | None = None) -> pathlib.Path | None:
  """The weights file to use: `path` if given (and it exists), else the first default location that exists."""
  candidates = [pathlib.Path(path).expanduser()] if path else default_search_paths()
  return next((p for p in candidates if p.is_file()), None)


def load_vgg19_params(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
  """Loads VGG19 conv weights as VGG19Features params: {"conv1_1": {"kernel": HWIO, "bias"}, ...} float32.

  The result always follows torchvision's input convention (RGB, ImageNet mean/std), whatever the file.
  Raises VGG19WeightsNotFound if there is no file, ValueError if the file is not VGG19's conv weights.
  """
  found = find_vgg19_weights(path)
  if found is None:
    raise VGG19WeightsNotFound([pathlib.Path(path).expanduser()] if path else default_search_paths())
  kind = _detect_format(found)
  if kind == "torch":
    params = _params_from_torch_state(_read_torch_state_dict(found), found)
  elif kind == "h5":
    params = _params_from_keras_h5(found)
  else:
    params = _params_from_npz(found)
  return {name: {k: jnp.asarray(v) for k, v in layer.items()} for name, layer in params.items()}


def save_vgg19_npz(params: dict[str, dict[str, Any]], path: str | os.PathLike) -> None:
  """Writes params in the .npz layout, e.g. to ~/.cache/restore_jax/vgg19.npz, the first place searched."""
  arrays = {f"{name}/{k}": np.asarray(v, np.float32) for name, layer in params.items() for k, v in layer.items()}
  pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
  with open(path, "wb") as f:
    np.savez(f, **arrays)


def caffe_bgr_to_imagenet_rgb(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Rewrites a first conv trained on Caffe-preprocessed input so it takes ImageNet-normalised RGB instead.

  Caffe input, per RGB channel j: c_j = 255 x_j - caffe_mean_j (fed in BGR order). Normalised input:
  n_j = (x_j - mean_j) / std_j, so c_j = 255 std_j n_j + (255 mean_j - caffe_mean_j). A conv is linear in its
  input, so conv(c, W) + b = conv(n, W * 255 std) + b + sum_{h,w,j} W[h, w, j] (255 mean_j - caffe_mean_j).
  This is exact wherever the 3x3 window lies inside the image. On the one-pixel border the zero padding
  differs (zero in caffe space is not zero in normalised space), so border outputs of conv1_1 differ slightly.
  """
  kernel = np.asarray(kernel, np.float64)[:, :, ::-1, :]  # Input channels BGR -> RGB.
  mean, std = np.asarray(vgg19.IMAGENET_MEAN), np.asarray(vgg19.IMAGENET_STD)
  shift = 255.0 * mean - np.asarray(CAFFE_BGR_MEAN)[::-1]
  new_kernel = kernel * (255.0 * std)[None, None, :, None]
  new_bias = np.asarray(bias, np.float64) + np.einsum("hwio,i->o", kernel, shift)
  return new_kernel.astype(np.float32), new_bias.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Format detection and shape checks.


def _detect_format(path: pathlib.Path) -> str:
  suffix = path.suffix.lower()
  if suffix == ".npz":
    return "npz"
  if suffix in _H5_EXTENSIONS or h5py.is_hdf5(path):
    return "h5"
  if suffix in _TORCH_EXTENSIONS:
    return "torch"
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as zf:
      names = zf.namelist()
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
      return "torch"
    if names and all(n.endswith(".npy") for n in names):
      return "npz"
  with open(path, "rb") as f:
    if f.read(1) == b"\x80":  # A pickle stream: torch's legacy format.
      return "torch"
  raise ValueError(
      f"Cannot tell the format of {path}: expected a torchvision state dict ({', '.join(_TORCH_EXTENSIONS)}), "
      f"a Keras HDF5 file ({', '.join(_H5_EXTENSIONS)}) or an .npz of 'conv1_1/kernel'-style arrays.")


def _checked(array: Any, expected: tuple[int, ...], key: str, path: pathlib.Path) -> np.ndarray:
  array = np.asarray(array)
  if array.shape != expected:
    raise ValueError(
        f"{path}: {key!r} has shape {array.shape}, VGG19 needs {expected}. Is this a VGG19 weights file "
        "(not VGG16 or a batch-norm variant)?")
  return array.astype(np.float32)


def _missing(key: str, path: pathlib.Path, present: list[str]) -> ValueError:
  sample = ", ".join(sorted(present)[:8])
  return ValueError(f"{path}: no {key!r}; this does not look like VGG19 conv weights (it has e.g. {sample}).")


# ----------------------------------------------------------------------------------------------------------------
# torchvision state dicts.


def _params_from_torch_state(state: dict[str, np.ndarray], path: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  if isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]
  state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
  if any(k.endswith("running_mean") for k in state):
    raise ValueError(f"{path} holds a batch-norm VGG (vgg19_bn); use the plain VGG19 weights ({TORCHVISION_URL}).")
  params = {}
  for index, (name, (kernel_shape, bias_shape)) in zip(TORCH_CONV_INDICES, vgg19.conv_shapes().items()):
    weight_key, bias_key = f"features.{index}.weight", f"features.{index}.bias"
    for key in (weight_key, bias_key):
      if key not in state:
        raise _missing(key, path, list(state))
    oihw_shape = (kernel_shape[3], kernel_shape[2], kernel_shape[0], kernel_shape[1])
    weight = _checked(state[weight_key], oihw_shape, weight_key, path)
    params[name] = {
        "kernel": np.ascontiguousarray(weight.transpose(2, 3, 1, 0)),  # OIHW -> HWIO.
        "bias": _checked(state[bias_key], bias_shape, bias_key, path),
    }
  return params


class _StorageType(NamedTuple):
  name: str


class _Storage(NamedTuple):
  key: str
  type_name: str
  element_offset: int  # Non-zero only for the storage views of very old (pre-1.0) torch files.


class _LazyTensor(NamedTuple):
  """A tensor whose bytes are read after unpickling (the legacy format stores them after the pickle)."""
  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


# Legacy storage class name -> numpy dtype (little endian unless the archive says otherwise).
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "UntypedStorage": "u1",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER.


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *unused) -> _LazyTensor:
  """Stands in for torch._utils._rebuild_tensor(_v2): same leading arguments, no torch needed."""
  del unused  # requires_grad, backward hooks, metadata.
  return _LazyTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *unused) -> Any:
  del unused
  return data


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a state dict while refusing every global that is not a container, tensor or storage class,
  so reading a weights file cannot run arbitrary code."""

  _ALLOWED = {
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  }

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in self._ALLOWED:
      return self._ALLOWED[(module, name)]
    if module.startswith("torch") and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(
        f"Refusing to load {module}.{name} from a weights file; save a plain state dict with "
        "torch.save(model.state_dict(), path).")

  def persistent_load(self, pid: Any) -> _Storage:
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"Unsupported persistent id {pid!r} in a torch file.")
    storage_type, key = pid[1], str(pid[2])
    view = pid[5] if len(pid) > 5 else None
    if view is not None:  # (view key, element offset, view size): a slice of the root storage.
      return _Storage(key, storage_type.name, int(view[1]))
    return _Storage(key, storage_type.name, 0)


def _array_from_bytes(data: bytes, type_name: str, byteorder: str = "<") -> np.ndarray:
  array = np.frombuffer(data, np.dtype(byteorder + _STORAGE_DTYPES[type_name]))
  if type_name == "BFloat16Storage":  # bfloat16 is the top half of a float32.
    array = (array.astype(np.uint32) << 16).view(np.float32)
  return array


def _materialize(tensor: _LazyTensor, flat: np.ndarray) -> np.ndarray:
  start = tensor.storage.element_offset + tensor.offset
  extent = 1 + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride)) if all(tensor.size) else 0
  if start + extent > flat.size:
    raise ValueError("A tensor in the torch file reaches past its storage; the file is corrupt or truncated.")
  strides = tuple(s * flat.itemsize for s in tensor.stride)
  return np.lib.stride_tricks.as_strided(flat[start:], tensor.size, strides).copy()


def _read_torch_state_dict(path: pathlib.Path) -> dict[str, np.ndarray]:
  """torch.load for state dicts, without torch: {key: numpy array}."""
  try:
    return _unpickle_torch_file(path)
  except (pickle.UnpicklingError, EOFError) as e:
    raise ValueError(f"{path}: cannot read it as a torch state dict: {e}") from e


def _unpickle_torch_file(path: pathlib.Path) -> dict[str, np.ndarray]:
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as zf:
      names = zf.namelist()
      pickle_name = next((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), None)
      if pickle_name is None:
        raise ValueError(f"{path} is a zip file but not a torch checkpoint (no data.pkl).")
      prefix = pickle_name[: -len("data.pkl")]
      byteorder = "<"
      if prefix + "byteorder" in names and zf.read(prefix + "byteorder").strip() == b"big":
        byteorder = ">"
      with zf.open(pickle_name) as f:
        obj = _TorchUnpickler(f).load()
      storages = {}

      def storage_array(storage: _Storage) -> np.ndarray:
        if storage.key not in storages:
          storages[storage.key] = _array_from_bytes(
              zf.read(f"{prefix}data/{storage.key}"), storage.type_name, byteorder)
        return storages[storage.key]

      return _materialize_all(obj, storage_array, path)

  with open(path, "rb") as f:  # Legacy: magic, protocol, sys info, the object, storage keys, raw storages.
    if _TorchUnpickler(f).load() != _LEGACY_MAGIC:
      raise ValueError(f"{path} is neither a zip nor a legacy torch checkpoint.")
    _TorchUnpickler(f).load()  # Protocol version.
    _TorchUnpickler(f).load()  # System info; storages are always written little endian.
    obj = _TorchUnpickler(f).load()
    storage_types = {}
    _collect_storage_types(obj, storage_types)
    storages = {}
    for key in _TorchUnpickler(f).load():
      numel = int.from_bytes(f.read(8), "little", signed=True)
      type_name = storage_types.get(str(key), "ByteStorage")
      itemsize = np.dtype(_STORAGE_DTYPES[type_name]).itemsize
      storages[str(key)] = _array_from_bytes(f.read(numel * itemsize), type_name)
    return _materialize_all(obj, lambda storage: storages[storage.key], path)


def _collect_storage_types(obj: Any, out: dict[str, str]) -> None:
  if isinstance(obj, _LazyTensor):
    out[obj.storage.key] = obj.storage.type_name
  elif isinstance(obj, dict):
    for value in obj.values():
      _collect_storage_types(value, out)


def _materialize_all(obj: Any, storage_array, path: pathlib.Path) -> dict[str, Any]:
  if not isinstance(obj, dict):
    raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__}); save model.state_dict().")

  def convert(value: Any) -> Any:
    if isinstance(value, _LazyTensor):
      return _materialize(value, storage_array(value.storage))
    if isinstance(value, dict):
      return {k: convert(v) for k, v in value.items()}
    return value

  return convert(obj)


# ----------------------------------------------------------------------------------------------------------------
# Keras HDF5 and npz.

_KERAS_LAYER = re.compile(r"block(\d)_conv(\d)")


def _params_from_keras_h5(path: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  """Finds each `block{s}_conv{i}` layer group wherever the layout puts it (keras.applications' file,
  Keras 2 `save_weights`/`save`, Keras 3 `.weights.h5`), and takes its 4-D dataset as the kernel and its 1-D
  dataset as the bias."""
  with h5py.File(path, "r") as f:
    root = f["model_weights"] if "model_weights" in f else f
    groups: dict[str, list[str]] = collections.defaultdict(list)

    def visit(name: str, item: Any) -> None:
      parts = name.split("/")
      match = _KERAS_LAYER.fullmatch(parts[-1])
      if not (isinstance(item, h5py.Group) and match) or any(p.startswith("optimizer") for p in parts):
        return
      if any(_KERAS_LAYER.fullmatch(p) for p in parts[:-1]):  # Keras 2 nests block1_conv1/block1_conv1/kernel:0.
        return
      groups[f"conv{match.group(1)}_{match.group(2)}"].append(name)

    root.visititems(visit)
    params = {}
    for name, (kernel_shape, bias_shape) in vgg19.conv_shapes().items():
      keras_name = "block{}_conv{}".format(*name[4:].split("_"))
      if not groups.get(name):
        raise _missing(keras_name, path, [k for k in root.keys()])
      if len(groups[name]) > 1:
        raise ValueError(f"{path}: layer {keras_name!r} appears more than once: {groups[name]}.")
      datasets = []
      root[groups[name][0]].visititems(lambda n, d: datasets.append((n, d)) if isinstance(d, h5py.Dataset) else None)
      kernels = [(n, d[()]) for n, d in datasets if d.ndim == 4]
      biases = [(n, d[()]) for n, d in datasets if d.ndim == 1]
      if len(kernels) != 1 or len(biases) != 1:
        raise ValueError(
            f"{path}: layer {keras_name!r} should hold one 4-D kernel and one 1-D bias, found "
            f"{[(n, d.shape) for n, d in datasets]}.")
      params[name] = {
          "kernel": _checked(kernels[0][1], kernel_shape, f"{keras_name}/{kernels[0][0]}", path),
          "bias": _checked(biases[0][1], bias_shape, f"{keras_name}/{biases[0][0]}", path),
      }
  # keras.applications' VGG19 was trained on Caffe-preprocessed BGR input.
  params["conv1_1"]["kernel"], params["conv1_1"]["bias"] = caffe_bgr_to_imagenet_rgb(
      params["conv1_1"]["kernel"], params["conv1_1"]["bias"])
  return params


def _params_from_npz(path: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  with np.load(path) as arrays:
    params = {}
    for name, (kernel_shape, bias_shape) in vgg19.conv_shapes().items():
      layer = {}
      for leaf, shape in (("kernel", kernel_shape), ("bias", bias_shape)):
        key = f"{name}/{leaf}"
        if key not in arrays.files:
          raise _missing(key, path, arrays.files)
        layer[leaf] = _checked(arrays[key], shape, key, path)
      params[name] = layer
  return params
