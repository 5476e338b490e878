"""What every perceptual metric shares: the error for missing weights, the cache folders, input preparation."""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from restore_jax import metrics


class MetricUnavailable(RuntimeError):
  """A metric cannot run here (its weights are not on this machine); the message says what to install or where
  to put which file."""


def torch_hub_checkpoints() -> pathlib.Path:
  """torch.hub's download folder, $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints), found
  the way torch finds it, without importing torch."""
  home = pathlib.Path.home()
  xdg_cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", home / ".cache"))
  torch_home = pathlib.Path(os.environ.get("TORCH_HOME", xdg_cache / "torch")).expanduser()
  return torch_home / "hub" / "checkpoints"


# restore_jax.metrics' preparation (clip, 8-bit rounding, MATLAB's Y, crop) as one compiled program per shape,
# which compiles faster than its dozen eager ops.
prepare_levels = jax.jit(metrics.prepare_for_metric, static_argnames=("crop_border", "y_channel", "round_to_uint8"))


def check_crop_border(metric: str, crop_border: int) -> None:
  """Config-time check of the crop_border option: an int >= 0."""
  if not isinstance(crop_border, (int, np.integer)) or isinstance(crop_border, bool) or crop_border < 0:
    raise ValueError(f"{metric}: crop_border must be an integer >= 0 (pixels dropped from each side), "
                     f"got {crop_border!r}.")


def prepare_rgb(image, *, crop_border: int, round_to_uint8: bool) -> np.ndarray:
  """HWC image in [0, 1] -> HWC float32 RGB in [0, 1], clipped, rounded to 8-bit levels (unless told not to)
  and cropped, as metrics.py prepares images; a one-channel image is repeated to three channels."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"Expected an HWC image with 1 or 3 channels, got shape {image.shape}.")
  levels = prepare_levels(jnp.asarray(image), crop_border=crop_border, y_channel=False,
                          round_to_uint8=round_to_uint8)
  rgb = np.asarray(levels, np.float32) / np.float32(255.0)
  return np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb
