"""The FID Inception weights, pytorch-fid's pt_inception-2015-12-05-6726825d.pth, into FIDInceptionV3's variables.

The file is a torch state dict (read without torch) whose keys name the modules of inception.py:
`<module>.conv.weight` (OIHW -> HWIO kernel), `<module>.bn.weight` / `.bn.bias` (scale / bias), and
`<module>.bn.running_mean` / `.bn.running_var` (the frozen batch statistics). The classifier (`fc.*`) and
`num_batches_tracked` counters are not needed for pool3 and are ignored.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import numpy as np

from restore_jax.models import vgg19_weights
from restore_jax.perceptual import inception
from restore_jax.perceptual.common import MetricUnavailable, torch_hub_checkpoints

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"

# (collection, flax leaf) -> torch leaf, for the layers of a ConvBN.
_TORCH_LEAVES = {
    ("params", "conv", "kernel"): "conv.weight",
    ("params", "bn", "scale"): "bn.weight",
    ("params", "bn", "bias"): "bn.bias",
    ("batch_stats", "bn", "mean"): "bn.running_mean",
    ("batch_stats", "bn", "var"): "bn.running_var",
}


def default_weights_path() -> pathlib.Path:
  """Where torch.hub (and so pytorch-fid) keeps the file: $TORCH_HOME/hub/checkpoints/."""
  return torch_hub_checkpoints() / WEIGHTS_FILE


def torch_key_map(width_divisor: int = 1) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """{torch state-dict key: (flax variable path, flax shape)} for every variable of FIDInceptionV3."""
  mapping = {}

  def walk(tree: dict, path: tuple[str, ...]) -> None:
    for key, value in tree.items():
      if isinstance(value, dict):
        walk(value, path + (key,))
        continue
      collection, *modules = path
      leaf = _TORCH_LEAVES[(collection, modules[-1], key)]
      mapping[".".join(modules[:-1] + [leaf])] = (path + (key,), tuple(value))

  walk(inception.variable_shapes(width_divisor), ())
  return mapping


def load_fid_inception(path: str | os.PathLike | None = None, width_divisor: int = 1) -> dict[str, Any]:
  """{"params": ..., "batch_stats": ...} of FIDInceptionV3 as float32 NumPy arrays, from `path` or the torch hub
  cache. Raises MetricUnavailable when the file is not there, ValueError when it is not the FID Inception."""
  found = pathlib.Path(path).expanduser() if path is not None else default_weights_path()
  if not found.is_file():
    raise MetricUnavailable(
        f"FID needs the Inception weights {WEIGHTS_FILE}, not found at {found}. Download it on a machine with "
        f"internet access from {WEIGHTS_URL} and put it at {default_weights_path()} (where pytorch-fid keeps it), "
        "or pass its location as the metric's weights_path option.")
  state = vgg19_weights._read_torch_state_dict(found)
  variables: dict[str, Any] = {}
  for key, (flax_path, shape) in torch_key_map(width_divisor).items():
    if key not in state:
      raise ValueError(f"{found}: no {key!r}; is it pytorch-fid's {WEIGHTS_FILE}?")
    value = np.asarray(state[key], np.float32)
    if flax_path[-1] == "kernel":
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    if value.shape != shape:
      raise ValueError(f"{found}: {key!r} has shape {value.shape} after conversion, the FID Inception needs "
                       f"{shape}.")
    node = variables
    for part in flax_path[:-1]:
      node = node.setdefault(part, {})
    node[flax_path[-1]] = value
  return variables
