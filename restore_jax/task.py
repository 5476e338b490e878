"""A task's geometry, read from `config.task`, and the few array operations every task shares through it.

Super-resolution, denoising, inpainting and colorization differ, for the generic code, only in numbers: how much
larger the output is than the input (`scale`), how many channels each has, whether the generator also sees a
mask of missing pixels, how many border pixels scoring ignores, and which restoration-free baseline a model must
beat. The loop, the step, evaluation, restoration and the web page read those numbers here and nothing else
about the task.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

BASELINES = ("bicubic", "identity", "median")


@dataclasses.dataclass(frozen=True)
class Task:
  """Geometry of one restoration task (see `from_config`)."""

  scale: int = 1  # Output height / input height.
  in_channels: int = 3  # Channels of `input` (1 for a gray image to colorize).
  out_channels: int = 3  # Channels of `target` and of the generator's output.
  use_mask: bool = False  # The generator also sees `mask` (1 = missing pixel) as one more input channel.
  crop_border: int = 0  # Pixels dropped from every side before scoring (the scale, for super-resolution).
  baseline: str = "identity"  # "bicubic", "identity" or "median": what a model must beat.

  @property
  def generator_channels(self) -> int:
    """Channels of the array the generator takes: the input's, plus one for the mask."""
    return self.in_channels + int(self.use_mask)

  def input_size(self, target_size: int) -> int:
    return target_size // self.scale

  @property
  def upsample_method(self) -> str:
    """How an input is brought to the target's size without learning: bicubic where that is the baseline to
    beat (super-resolution), else nearest (a no-op when the sizes already agree)."""
    return "bicubic" if self.baseline == "bicubic" else "nearest"


def from_config(config: Mapping[str, Any]) -> Task:
  """The task of a recipe config; checks its values and names the key at fault."""
  t = dict(config.get("task") or {})
  scale = int(t.get("scale", 1))
  crop_border = int(t.get("crop_border", -1))
  task = Task(
      scale=scale,
      in_channels=int(t.get("in_channels", 3)),
      out_channels=int(t.get("out_channels", 3)),
      use_mask=bool(t.get("use_mask", False)),
      # -1: the super-resolution convention (the scale), and 0 for restorations that keep the size.
      crop_border=(scale if scale > 1 else 0) if crop_border < 0 else crop_border,
      baseline=str(t.get("baseline", "bicubic" if scale > 1 else "identity")),
  )
  if task.scale < 1:
    raise ValueError(f"task.scale must be an integer >= 1 (output size / input size), got {task.scale}.")
  for key in ("in_channels", "out_channels"):
    if getattr(task, key) not in (1, 3):
      raise ValueError(f"task.{key} must be 1 (gray) or 3 (RGB), got {getattr(task, key)}.")
  if task.baseline not in BASELINES:
    raise ValueError(f"task.baseline must be one of {BASELINES}, got {task.baseline!r}.")
  return task


def generator_input(inputs: jax.Array | np.ndarray, mask: jax.Array | np.ndarray | None, task: Task):
  """What the generator is applied to: `input`, with `mask` concatenated on channels when the task uses one."""
  if not task.use_mask:
    return inputs
  if mask is None:
    raise ValueError("This task's generator needs a mask of missing pixels (task.use_mask), and none was given.")
  xp = jnp if isinstance(inputs, jax.Array) or isinstance(mask, jax.Array) else np
  return xp.concatenate([inputs, xp.asarray(mask, inputs.dtype)], axis=-1)


def upsample_to(images: jax.Array, height: int, width: int, method: str = "bicubic") -> jax.Array:
  """NHWC images resized to (height, width); unchanged when they have that size already."""
  if images.shape[1:3] == (height, width):
    return images
  return jax.image.resize(images, images.shape[:1] + (height, width) + images.shape[3:], method)


def to_rgb(images: jax.Array | np.ndarray, channels: int = 3):
  """Gray images repeated on `channels` channels (colour images pass through), to compare or show beside RGB."""
  if images.shape[-1] == channels:
    return images
  if images.shape[-1] != 1:
    raise ValueError(f"Cannot turn {images.shape[-1]}-channel images into {channels}-channel ones.")
  xp = jnp if isinstance(images, jax.Array) else np
  return xp.repeat(images, channels, axis=-1)


def baseline_output(inputs: jax.Array, target_shape: tuple[int, ...], task: Task) -> jax.Array:
  """A restoration that learns nothing, in the step (jitted): the input brought to the target's size and channels.

  Bicubic upsampling for super-resolution, the input itself (nearest-upscaled) otherwise. The median-filter
  baseline is for evaluation only (restore_jax.baselines); in the step it falls back to the input itself.
  """
  height, width = target_shape[1:3]
  return to_rgb(upsample_to(inputs, height, width, task.upsample_method), target_shape[-1])
