"""The training input pipeline: grain, deterministic, topology-independent.

Global batch b is a function of (seed, b) alone, whatever the number of
devices and processes (the loop takes optim.n_critic batches per step, so
step s reads batches s * n_critic ... s * n_critic + n_critic - 1). Sample
g = b * batch_size + i of the global stream reads record `permutation_e[g % n]`
of epoch e = g // n, and takes all its randomness (crop, flip, rotation,
degradation) from `np.random.default_rng([seed, g])`. Process p of P computes
only positions [p * B/P, (p+1) * B/P) of each global batch, so P processes
together yield exactly the batches one process would.

Grain holds the stream as a MapDataset of per-process batches indexed by
batch number, so the iterator state is just the next batch and worker
processes each build whole batches without changing their content.

Per sample: decode -> random crop_size x crop_size crop (the `target`) ->
augment (flips and rotations; with data.permute_channels, a random order of
the colour channels too) -> degrade (the `input`, and a `mask` for damage).
A record that is unusable for one of SKIP_REASONS is stepped over
deterministically (record + 1, + 2, ... mod n) and counted by reason in the
sample's `skipped_<reason>` (train.py sums them and stops a run that reads
mostly bad records).

With eval.holdout > 0 (and no eval.data) the held-out records of the source
are not part of the stream at all (sources.train_source)."""

from __future__ import annotations

import collections
import sys
import threading
from typing import Any

from absl import flags
from absl import logging
import grain
import numpy as np

from restore_jax import plugins
from restore_jax import task as task_lib
from restore_jax.data import decode
from restore_jax.data import sources
from restore_jax.degradations import make_degradation

# Why a record was stepped over: the decode.REASONS ("decode": broken or not
# an image, "huge": over data.max_image_pixels, "empty": zero bytes) and
# "small": a side shorter than data.crop_size.
SKIP_REASONS = ("decode", "small", "huge", "empty")
_MAX_LOGGED_RECORDS = 20  # Distinct bad records named in warnings per process.
_STEPS = sys.maxsize // 2**16  # "Forever", with room for s * batch_size.


class SampleMaker:
  """Global position g -> one training example; picklable for grain workers."""

  def __init__(self, source: sources.ImageSource, *, seed: int, crop_size: int,
               augment: bool, degradation: Any, max_pixels: int | None = None,
               imports: tuple[str, ...] = (), permute_channels: bool = False):
    if len(source) == 0:
      raise ValueError("The data source is empty.")
    self.source, self.seed = source, int(seed)
    self.crop_size, self.augment = int(crop_size), bool(augment)
    self.permute_channels = bool(permute_channels)
    self.max_pixels = None if max_pixels is None else int(max_pixels)
    self.degradation_config = degradation
    self.imports = tuple(imports)  # config.imports, re-imported by workers.
    self._setup()

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    for key in ("degrade", "_bad_records", "_permutations", "_lock"):
      state.pop(key)
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._setup()

  def _setup(self) -> None:
    plugins.import_modules(self.imports)
    self.degrade = make_degradation(self.degradation_config)
    # record index -> skip reason; a cache only (badness is a property of the
    # record), so it never changes what a position yields.
    self._bad_records: dict[int, str] = {}
    self._permutations: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def _permutation(self, epoch: int) -> np.ndarray:
    """The record order of one epoch; the last two are kept (epoch edges)."""
    order = self._permutations.get(epoch)
    if order is None:
      order = np.random.default_rng([self.seed, epoch]).permutation(
          len(self.source))
      with self._lock:
        if len(self._permutations) >= 2:
          self._permutations.pop(min(self._permutations))
        self._permutations[epoch] = order
    return order

  def record_index(self, position: int) -> int:
    """Record read at global position g: a fresh permutation every epoch."""
    epoch, offset = divmod(position, len(self.source))
    return int(self._permutation(epoch)[offset])

  def __call__(self, position: int) -> dict[str, np.ndarray]:
    image, skips = self._first_good_image(self.record_index(position))
    rng = np.random.default_rng([self.seed, position])
    target = random_crop(image, self.crop_size, rng)
    if self.augment:
      target = random_flip_rot90(target, rng)
    if self.permute_channels:
      target = np.ascontiguousarray(target[..., rng.permutation(target.shape[-1])])
    example = {k: np.asarray(v, np.float32)
               for k, v in self.degrade(target, rng).items()}
    example.update(target=target, index=np.int64(position),
                   skipped=np.int32(sum(skips.values())))
    for reason in SKIP_REASONS:
      example[f"skipped_{reason}"] = np.int32(skips[reason])
    return example

  def _first_good_image(self, index: int):
    """Decodes record index, index + 1, ... until one is usable."""
    skips = collections.Counter()
    n = len(self.source)
    for attempt in range(n):
      i = (index + attempt) % n
      reason = self._bad_records.get(i)
      if reason is None:
        image, reason, detail = self._try_load(i)
        if image is not None:
          return image, skips
        self._remember_bad(i, reason, detail)
      skips[reason] += 1
    counts = ", ".join(f"{count} {reason}" for reason, count in skips.items())
    raise RuntimeError(
        f"All {n} records of the data source are unusable ({counts}; see "
        f"pipeline.SKIP_REASONS): check data.source, data.crop_size="
        f"{self.crop_size} and data.max_image_pixels={self.max_pixels}.")

  def _try_load(self, i: int):
    try:
      image = decode.to_rgb_float(self.source[i], max_pixels=self.max_pixels)
    except decode.BadImage as e:
      return None, e.reason, str(e)
    height, width = image.shape[:2]
    if min(height, width) < self.crop_size:
      return None, "small", (f"{width}x{height} is smaller than the "
                             f"{self.crop_size}x{self.crop_size} crop")
    return image, None, None

  def _remember_bad(self, i: int, reason: str, detail: str) -> None:
    with self._lock:
      if i in self._bad_records:
        return
      self._bad_records[i] = reason
      logged = len(self._bad_records)
    if logged <= _MAX_LOGGED_RECORDS:
      logging.warning("Skipping bad image %s: %s.", self.source.name(i), detail)
      if logged == _MAX_LOGGED_RECORDS:
        logging.warning("Further bad images will be skipped without a warning; "
                        "the batches count them in 'skipped_*'.")


def random_crop(image: np.ndarray, size: int,
                rng: np.random.Generator) -> np.ndarray:
  """A size x size window at a uniformly random position."""
  height, width = image.shape[:2]
  top = rng.integers(0, height - size + 1)
  left = rng.integers(0, width - size + 1)
  return np.ascontiguousarray(image[top:top + size, left:left + size])


def random_flip_rot90(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One of the 8 symmetries of the square: optional flip, then k * 90 deg."""
  if rng.integers(2):
    image = image[:, ::-1]
  image = np.rot90(image, k=int(rng.integers(4)))
  return np.ascontiguousarray(image)


def check_degradation(config) -> None:
  """Checks that the degradation makes what the task's geometry says.

  Degrades one gray crop and compares the shapes with `config.task`, so a
  recipe whose degradation and task disagree (a x4 downsampling with
  task.scale = 1, a mask the generator will not see) stops with the keys to
  fix before any training starts.
  """
  task = task_lib.from_config(config)
  size = int(config.data.crop_size)
  if size % task.scale:
    raise ValueError(f"data.crop_size={size} must be a multiple of "
                     f"task.scale={task.scale}.")
  example = make_degradation(config.degradation)(
      np.full((size, size, task.out_channels), 0.5, np.float32),
      np.random.default_rng(0))
  small = task.input_size(size)
  expected = (small, small, task.in_channels)
  got = tuple(np.shape(example["input"]))
  if got != expected:
    raise ValueError(
        f"The degradation turns a {size}x{size} crop into an input of shape "
        f"{got}, but task.scale={task.scale} and task.in_channels="
        f"{task.in_channels} say {expected}: make config.task agree with "
        f"config.degradation.")
  if ("mask" in example) != task.use_mask:
    has = "makes" if "mask" in example else "makes no"
    raise ValueError(
        f"The degradation {has} mask of missing pixels, but task.use_mask="
        f"{task.use_mask}: set task.use_mask={'mask' in example}.")


def _stack(examples) -> dict[str, np.ndarray]:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def make_train_dataset(config, *, process_index: int = 0,
                       process_count: int = 1) -> grain.IterDataset:
  """This process's share of the global training batches, forever."""
  global_batch = int(config.batch_size)
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"Bad process_index={process_index} for "
                     f"process_count={process_count}.")
  if global_batch % process_count:
    raise ValueError(f"batch_size={global_batch} must be divisible by the "
                     f"number of processes ({process_count}).")
  check_degradation(config)
  source = sources.train_source(config)
  degradation = config.degradation  # Plain dict: picklable for workers.
  degradation = (degradation.to_dict() if hasattr(degradation, "to_dict")
                 else dict(degradation))
  make_sample = SampleMaker(source, seed=config.seed,
                            crop_size=config.data.crop_size,
                            augment=config.data.augment,
                            permute_channels=config.data.get("permute_channels", False),
                            degradation=degradation,
                            max_pixels=config.data.get("max_image_pixels"),
                            imports=tuple(config.get("imports") or ()))
  local_batch = global_batch // process_count
  first = process_index * local_batch

  def make_batch(step: int) -> dict[str, np.ndarray]:
    start = step * global_batch + first
    return _stack([make_sample(g) for g in range(start, start + local_batch)])

  prefetch = int(config.data.get("prefetch", 2))
  workers = int(config.data.get("num_workers", 0))
  dataset = grain.MapDataset.range(_STEPS).map(make_batch)
  if workers > 0:
    # grain's worker processes read absl flags; outside an absl app (tests,
    # notebooks) they are unparsed and the defaults are what we want.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    return dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=max(1, prefetch)))
  return dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=max(1, min(prefetch, 4)), prefetch_buffer_size=max(1, prefetch)))


def make_train_iterator(config, *, process_index: int = 0,
                        process_count: int = 1) -> grain.DatasetIterator:
  """A checkpointable iterator (get_state / set_state) over the batches."""
  return iter(make_train_dataset(config, process_index=process_index,
                                 process_count=process_count))
