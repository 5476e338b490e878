"""Checkpoints: the GANState and the grain iterator saved together by one orbax CheckpointManager.

Saving the data iterator beside the model means a resumed run sees exactly the batches it would have seen.

A run that lasts days meets half-written and damaged checkpoints (a preempted save, a bad disk, a copy cut short).
Restoring walks the steps from the newest down and takes the first that reads back whole; what it skips is moved
to `<checkpoints>_quarantine/` with a warning, never deleted, so a person can look at it and orbax can write that
step number again. Every path goes through etils.epath, so a workdir may be `gs://bucket/run`.

Each save also keeps a fingerprint of every array (see `state_fingerprint`), computed on the accelerator that
holds it or, for arrays in host memory, in orbax's background thread, so a save blocks the loop no longer than
orbax's own. Restoring
compares it with what was read: orbax's chunks carry no checksum, and overwritten bytes can otherwise restore
without an error, as silently wrong weights.
"""

import dataclasses
import json
import math
import os
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from restore_jax.state import GANState

# A save in progress lives in `<step>.orbax-checkpoint-tmp-<time>` until orbax renames it (local disks) or writes
# this file into it (object stores); see orbax/checkpoint/_src/path/atomicity.py.
TMP_MARKER = ".orbax-checkpoint-tmp"
COMMIT_FILE = "commit_success.txt"
QUARANTINE_SUFFIX = "_quarantine"
# The file in which orbax's CheckpointManager keeps a step's "metrics" item (and reads it whenever it lists steps).
METRICS_FILE = "metrics"
# DIR/config.json's record of the files behind data.source = "samples" ({name: sha256}), beside the config.
SAMPLE_FILES_KEY = "sample_files"

# Config keys (flattened, dotted) whose change alters the saved state's shapes or structure, what a batch holds, or
# the form of the saved data iterator (grain's multiprocess iterator keeps one state per worker): a checkpoint saved
# under one value cannot be resumed under another. A name matches itself and every key below it.
STATE_KEYS = ("task", "generator", "discriminator", "discriminator_conditional", "batch_size", "data.crop_size",
              "degradation", "optim.grad_clip_norm", "data.num_workers")
# Keys under STATE_KEYS that only matter when a run starts: where the generator's first weights come from.
START_ONLY_KEYS = ("generator.init_from", "generator.init_from_ema")
# Keys that leave the state loadable but change which batches or random numbers the run sees from here on.
REPRODUCIBILITY_KEYS = ("seed", "optim.n_critic", "data.source", "data.augment", "data.permute_channels",
                        "data.tfds_data_dir", "data.image_key", "eval.holdout", "eval.data")


class IncompatibleConfig(ValueError):
  """The config asks for a state or batch the workdir's checkpoints were not saved with."""


class NoGoodCheckpoint(ValueError):
  """Checkpoints exist but none of them (or not the one asked for) could be read; nothing was moved."""


# ---------------------------------------------------------------------------------------------------- Managers


def absolute(path: epath.PathLike) -> epath.Path:
  """Local paths made absolute (orbax refuses relative ones); URLs such as gs://bucket/run pass through."""
  return epath.Path(path if "://" in str(path) else os.path.abspath(path))


def make_manager(directory: epath.PathLike, *, keep: int) -> ocp.CheckpointManager:
  """The run's manager for `directory` (e.g. DIR/checkpoints), after moving half-written saves aside."""
  directory = epath.Path(directory)
  quarantine_half_written(directory)
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=True,
      cleanup_tmp_directories=False,  # Orbax would delete them silently; quarantine_half_written keeps them.
  )
  return ocp.CheckpointManager(directory, item_names=("state", "data", "digest"), options=options)


def make_best_manager(directory: epath.PathLike) -> ocp.CheckpointManager:
  """A manager for `directory` (e.g. DIR/best) that holds one checkpoint: the state and the metrics it scored.

  The metrics live in the checkpoint, so the best value so far survives a restart.
  """
  directory = epath.Path(directory)
  quarantine_half_written(directory)
  quarantine_unreadable_metrics(directory)  # Orbax reads every step's metrics when it opens the directory.
  options = ocp.CheckpointManagerOptions(
      max_to_keep=1, create=True, enable_async_checkpointing=True, cleanup_tmp_directories=False
  )
  return ocp.CheckpointManager(directory, item_names=("state", "metrics", "digest"), options=options)


def open_read_only(directory: epath.PathLike, item_names: tuple[str, ...] = ("state", "data", "digest")
                   ) -> ocp.CheckpointManager:
  """A manager that lists and reads `directory` but never writes, creates or moves anything (for inference).

  It does not read the steps' metrics when it opens (lightweight_initialize): inference needs none.
  """
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, cleanup_tmp_directories=False,
                                         lightweight_initialize=True)
  return ocp.CheckpointManager(epath.Path(directory), item_names=item_names, options=options)


# ---------------------------------------------------------------------------------------------------- Save


def save(manager: ocp.CheckpointManager, step: int, state: GANState, data_iterator) -> None:
  """Starts an asynchronous save; orbax finishes writing in the background.

  The digest's fingerprints are only started here (see `_fingerprint_inputs`); orbax's background thread
  finishes them and writes the digest, so the loop waits for nothing beyond orbax's own save.
  """
  manager.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator),
          digest=DigestSave(_fingerprint_inputs(state)),
      ),
      force=True,
  )


def save_best(
    manager: ocp.CheckpointManager, step: int, state: GANState, metrics: Mapping[str, float], metric: str,
    *, higher_is_better: bool = True,
) -> bool:
  """Saves `state` as the best checkpoint when `metrics[metric]` beats the best so far (PSNR: higher; LPIPS: lower).

  Returns whether it saved. The previous best is removed by orbax once the new one is committed.
  """
  if metric not in metrics:
    raise ValueError(f"Metric {metric!r} is not among the evaluation's metrics {sorted(metrics)}; "
                   f"set eval.best_metric to one of them (or to '' to keep no best checkpoint).")
  value = float(metrics[metric])
  if not math.isfinite(value):
    logging.warning("Not keeping step %d as the best checkpoint: %s = %s.", step, metric, value)
    return False
  manager.wait_until_finished()  # The previous best's metrics must be on disk before comparing with them.
  best = best_metrics(manager)
  if best is not None and not _best_generator_reads(manager, best[0], state):
    best = None  # It was damaged and is now set aside: this evaluation starts a new best.
  if best is not None:
    best_step, best_values = best
    if best_step == step:
      return False  # Already saved at this step (a resumed run repeating an evaluation).
    if metric in best_values:
      previous = float(best_values[metric])
      if (previous >= value) if higher_is_better else (previous <= value):
        return False
  manager.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          metrics=ocp.args.JsonSave({k: float(v) for k, v in metrics.items()}),
          digest=DigestSave(_fingerprint_inputs(state)),
      ),
      force=True,
  )
  return True


def best_metrics(manager: ocp.CheckpointManager) -> tuple[int, dict[str, float]] | None:
  """(step, metrics) of the best checkpoint in a best manager's directory, or None when it holds none.

  A best checkpoint whose metrics cannot be read is moved aside with a warning (even when it is the only one):
  losing the best so far costs a new best, never the training run.
  """
  found = _restore_newest_good(manager, lambda: dict(metrics=ocp.args.JsonRestore()), move_aside=True,
                               set_aside_all=True)
  if found is None:
    return None
  restored, step = found
  return step, dict(restored["metrics"])


def _best_generator_reads(manager: ocp.CheckpointManager, step: int, state: GANState) -> bool:
  """Whether the best checkpoint's generator (raw and EMA: what evaluation and restoration load) reads back and
  matches its digest; if not, it is moved aside with a warning. A partial read of the generator alone."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  item = _generator_item(abstract, ema=True, raw=True)
  reader = open_read_only(manager.directory, ("state", "metrics", "digest"))  # Its own handlers: a partial read.
  try:
    _restore_checked(reader, step, dict(state=_partial_restore_args(item)))
    error = None
  except Exception as e:  # As in _restore_newest_good: damaged files raise many kinds of errors.
    error = f"{type(e).__name__}: {e}"
  finally:
    reader.close()
  if not _all_processes_agree(error is None):
    error = error or "another process could not read it"
  if error is None:
    return True
  quarantine(manager.directory / str(step), f"its generator could not be read back ({_shorten(error)}); the next "
             "evaluation starts a new best")
  manager.reload()
  return False


# ---------------------------------------------------------------------------------------------------- Restore


def restore_latest(manager: ocp.CheckpointManager, state: GANState, data_iterator) -> tuple[GANState, int]:
  """Restores the newest good checkpoint into `state`'s shapes and shardings and rewinds `data_iterator`.

  Damaged steps newer than it are moved aside (see `quarantine`) and `manager` re-reads its steps, so a later
  save at their step numbers works. Returns the state and the step it was saved at (0 and `state` unchanged when
  there is none). Raises NoGoodCheckpoint, moving nothing, when checkpoints exist and none can be read.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  items = lambda: dict(state=ocp.args.StandardRestore(abstract),
                       data=grain.checkpoint.CheckpointRestore(data_iterator))
  found = _restore_newest_good(manager, items, move_aside=True)
  if found is None:
    return state, 0
  restored, step = found
  logging.info("Resumed from the checkpoint of step %d in %s.", step, manager.directory)
  return restored["state"], step


def restore_state(manager: ocp.CheckpointManager, abstract_state: Any, *, step: int | None = None,
                  move_aside: bool = False) -> tuple[Any, int]:
  """Only the "state" item of `step` (None = the newest good one), into `abstract_state`'s shapes and shardings.

  With move_aside=False damaged steps are skipped with a warning but left where they are (a training run may
  still be writing into the directory).
  Raises FileNotFoundError when there is no checkpoint (or not the asked step), NoGoodCheckpoint when there are
  some and none (or not the asked one) can be read.
  """
  return _restore_one_item(manager, lambda: dict(state=ocp.args.StandardRestore(abstract_state)), step=step,
                           move_aside=move_aside)


def restore_generator(manager: ocp.CheckpointManager, abstract_state: GANState, *, use_ema: bool = True,
                      step: int | None = None, move_aside: bool = False) -> tuple[dict[str, Any], int]:
  """The generator's {"params", "batch_stats"} (its EMA, or the raw ones) of `step`, and the step.

  For inference: nothing else of the state is read from storage (orbax's partial restore), neither optimizer nor
  the critic, so loading costs the generator's size in time and memory; only its arrays are checked against the
  digest. `abstract_state` gives shapes and shardings; step, move_aside and errors as in `restore_state`.
  """
  item = _generator_item(abstract_state, ema=use_ema, raw=not use_ema)
  state, step = _restore_one_item(manager, lambda: dict(state=_partial_restore_args(item)), step=step,
                                  move_aside=move_aside)
  return dict(state.ema_variables if use_ema else state.generator.variables), step


def _generator_item(abstract_state: GANState, *, ema: bool, raw: bool) -> GANState:
  """`abstract_state` with orbax's placeholder for every leaf but the generator's EMA and/or raw variables."""
  skipped = jax.tree.map(lambda _: ocp.PLACEHOLDER, abstract_state)
  if ema:
    skipped = skipped.replace(ema_params=abstract_state.ema_params, ema_batch_stats=abstract_state.ema_batch_stats)
  if raw:
    generator = skipped.generator.replace(params=abstract_state.generator.params,
                                          batch_stats=abstract_state.generator.batch_stats)
    skipped = skipped.replace(generator=generator)
  return skipped


def _partial_restore_args(item: Any) -> ocp.args.PyTreeRestore:
  """Restores the leaves of `item` that are not ocp.PLACEHOLDER; the placeholders are not read at all."""
  return ocp.args.PyTreeRestore(item, restore_args=ocp.checkpoint_utils.construct_restore_args(item))


def _restore_one_item(manager: ocp.CheckpointManager, items: Callable[[], dict[str, Any]], *, step: int | None,
                      move_aside: bool) -> tuple[Any, int]:
  if step is not None:
    if step not in manager.all_steps():
      raise FileNotFoundError(f"No checkpoint of step {step} in {manager.directory}; it holds steps "
                              f"{sorted(manager.all_steps())}.")
    try:
      return _restore_checked(manager, step, items())["state"], step
    except Exception as e:  # As in _restore_newest_good: damaged files raise many kinds of errors.
      raise NoGoodCheckpoint(f"The checkpoint of step {step} in {manager.directory} cannot be read "
                             f"({_shorten(f'{type(e).__name__}: {e}')}). Leave out the step to take the newest "
                             f"one that reads.") from e
  found = _restore_newest_good(manager, items, move_aside=move_aside)
  if found is None:
    raise FileNotFoundError(f"No checkpoint in {manager.directory}.")
  restored, step = found
  return restored["state"], step


class DigestMismatch(ValueError):
  """A restored state's bytes differ from the ones that were saved."""


# The digest's format, and MurmurHash3's 32-bit finaliser constants (Appleby 2011) and 2^32 / golden ratio
# (Knuth's multiplicative hashing) used by the fingerprint.
DIGEST_FORMAT = "restore_jax.fingerprint.v1"
_FMIX_1, _FMIX_2, _GOLDEN = 0x85EBCA6B, 0xC2B2AE35, 0x9E3779B9


def state_fingerprint(tree: Any) -> dict[str, list[int]]:
  """Two 32-bit fingerprints of every array in `tree`, by tree path (jax.tree_util.keystr).

  Over an array's 32-bit words w_i in C order (smaller items widened to 32 bits, 64-bit ones split in two):
  (sum_i fmix32(w_i + i * 0x9E3779B9), sum_i w_i * (2i + 1)), both modulo 2^32, fmix32 MurmurHash3's finaliser.
  A change of any one element changes both (fmix32 is a bijection and odd weights are invertible modulo 2^32);
  moved elements change both too. Integer sums, so the result is the same on any devices and sharding.
  Leaves that are ocp.PLACEHOLDER (not restored) are left out.
  """
  return {key: _fingerprint_value(value) for key, value in _fingerprint_inputs(tree).items()}


def _fingerprint_inputs(tree: Any) -> dict[str, Any]:
  """What the fingerprints are computed from, without waiting for anything, by tree path.

  Arrays in host memory (the CPU backend) are taken as zero-copy views, to be hashed later by orbax's background
  thread; while such a view is alive JAX does not donate the buffer to the next step, so the bytes stay those
  saved. Elsewhere the fingerprint itself is dispatched on the array's devices now and only 8 bytes per array
  ever reach the host.
  """
  inputs = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if leaf is ocp.PLACEHOLDER:
      continue
    view = _host_view(leaf)
    inputs[jax.tree_util.keystr(path)] = view if view is not None else _leaf_fingerprint(leaf)
  return inputs


def _host_view(leaf: Any) -> np.ndarray | None:
  """A zero-copy numpy view of an array that lives in host memory, else None (it lives on an accelerator)."""
  if not isinstance(leaf, jax.Array):
    return np.asarray(leaf)
  if any(device.platform != "cpu" for device in leaf.sharding.device_set):
    return None
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  if leaf.is_fully_addressable:
    return np.asarray(leaf)
  return np.asarray(leaf.addressable_data(0)) if leaf.is_fully_replicated else None


def _fingerprint_value(source: Any) -> list[int]:
  """[a, b] from a host view (hashed now) or an already dispatched device fingerprint (waited for)."""
  fingerprint = _leaf_fingerprint(source) if isinstance(source, np.ndarray) else source
  return [int(v) for v in _to_host(fingerprint)]


def _fmix32(x: jax.Array) -> jax.Array:
  x = x ^ (x >> 16)
  x = x * jnp.uint32(_FMIX_1)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(_FMIX_2)
  return x ^ (x >> 16)


@jax.jit
def _leaf_fingerprint(leaf: jax.Array) -> jax.Array:
  """(2,) uint32 for one array; compiled once per shape and dtype."""
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  leaf = jnp.asarray(leaf)
  if leaf.dtype == jnp.bool_:
    leaf = leaf.astype(jnp.uint8)
  width = leaf.dtype.itemsize
  if width < 4:
    words = jax.lax.bitcast_convert_type(leaf, jnp.dtype(f"uint{8 * width}")).astype(jnp.uint32)
  else:  # 4 bytes: the word itself; 8 bytes: two words, in memory order.
    words = jax.lax.bitcast_convert_type(leaf, jnp.uint32)
  words = words.reshape(-1)
  index = jax.lax.iota(jnp.uint32, words.size)
  mixed = jnp.sum(_fmix32(words + index * jnp.uint32(_GOLDEN)), dtype=jnp.uint32)
  weighted = jnp.sum(words * (index * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)
  return jnp.stack([mixed, weighted])


def _to_host(array: jax.Array) -> np.ndarray:
  """A small replicated array's value, also where it spans other processes' devices."""
  return np.asarray(array if array.is_fully_addressable else array.addressable_data(0))


class DigestHandler(ocp.JsonCheckpointHandler):
  """Writes the digest in orbax's background thread: host arrays are hashed there, device fingerprints fetched.

  Reads like orbax's JSON handler (same file), so older digests (CRC32 of each array) read too.
  """

  async def _save_fn(self, x, directory):
    if not ocp.utils.is_primary_host(self._primary_host):
      return
    digest = {"format": DIGEST_FORMAT, "fingerprints": {k: _fingerprint_value(v) for k, v in x.items()}}
    await super()._save_fn(digest, directory)


@ocp.args.register_with_handler(DigestHandler, for_save=True)
@dataclasses.dataclass
class DigestSave(ocp.args.CheckpointArgs):
  """What the fingerprints of a state being saved come from (see `_fingerprint_inputs`)."""
  item: Mapping[str, Any]


@ocp.args.register_with_handler(DigestHandler, for_restore=True)
@dataclasses.dataclass
class DigestRestore(ocp.args.CheckpointArgs):
  """Reads a step's digest."""


def _digest_problems(saved: Mapping[str, Any], restored: Any) -> tuple[list[str], list[str]]:
  """(arrays whose fingerprint differs from the saved one, restored arrays the digest does not know)."""
  if saved.get("format") == DIGEST_FORMAT:
    expected, now = saved["fingerprints"], state_fingerprint(restored)
  elif "format" not in saved:  # Written before fingerprints: CRC32 of each array's bytes on the host.
    expected = saved
    now = {jax.tree_util.keystr(path): _crc32(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]
           if leaf is not ocp.PLACEHOLDER}
  else:
    logging.warning("Unknown checkpoint digest format %r: restoring without checking it.", saved.get("format"))
    return [], []
  bad = [k for k, v in now.items() if v is not None and expected.get(k) is not None and expected[k] != v]
  return bad, sorted(set(now) - set(expected))


def _crc32(leaf: Any) -> int | None:
  if isinstance(leaf, jax.Array):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    if not leaf.is_fully_addressable:
      if not leaf.is_fully_replicated:
        return None
      leaf = leaf.addressable_data(0)
  return zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).tobytes())


def _restore_checked(manager: ocp.CheckpointManager, step: int, items: dict[str, Any]) -> dict[str, Any]:
  """Restores `items` of `step`, and checks the state against its saved digest when both are there."""
  check = "state" in items and (manager.directory / str(step) / "digest").exists()
  if check:
    items = dict(items, digest=DigestRestore())
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  if check:
    bad, unknown = _digest_problems(restored["digest"], restored["state"])
    if bad or unknown:
      raise DigestMismatch(f"the restored state differs from the saved one in {len(bad)} array(s) "
                           f"{bad[:3]}, and {len(unknown)} restored array(s) are not in its digest {unknown[:3]}")
  return restored


def _restore_newest_good(
    manager: ocp.CheckpointManager, items: Callable[[], dict[str, Any]], *, move_aside: bool,
    set_aside_all: bool = False,
) -> tuple[dict[str, Any], int] | None:
  """Tries the steps newest first; returns (restored items, step) of the first that reads, None when none exist.

  The steps that failed before it are damaged (an older one of the same run reads fine) and are quarantined when
  `move_aside`. When every step fails the cause is more likely the reader's side (storage access, a changed
  state structure) than damage, so nothing is moved and NoGoodCheckpoint says what each step raised; unless
  `set_aside_all` (the best checkpoint, which training can do without), which quarantines them and returns None.
  """
  failures: list[tuple[int, str]] = []
  found = None
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = _restore_checked(manager, step, items())
      error = None
    except Exception as e:  # Orbax, tensorstore, json and grain raise many kinds of errors for damaged files.
      restored, error = None, f"{type(e).__name__}: {e}"
    if not _all_processes_agree(error is None):
      error = error or "another process could not read this step"
    if error is None:
      found = (restored, step)
      break
    logging.warning("Cannot read the checkpoint of step %d in %s (%s).", step, manager.directory, _shorten(error))
    failures.append((step, error))
  if failures and found is None and not set_aside_all:
    listing = "\n".join(f"  step {step}: {_shorten(error)}" for step, error in failures)
    raise NoGoodCheckpoint(
        f"None of the {len(failures)} checkpoint(s) in {manager.directory} can be read, and nothing was moved:\n"
        f"{listing}\nIf the storage is reachable and these really are damaged, move them out of the directory "
        f"(or train in a new --workdir) to start afresh; if the code or config changed the state's structure, "
        f"use the version that wrote them."
    )
  if failures and move_aside:
    for step, error in failures:
      quarantine(manager.directory / str(step), f"it could not be read ({_shorten(error)})")
    manager.reload()
  return found


# ---------------------------------------------------------------------------------------------------- Quarantine


def quarantine_half_written(directory: epath.PathLike) -> list[epath.Path]:
  """Moves saves that never finished out of `directory`; returns where they went.

  Orbax ignores them when listing steps and would delete them if asked (cleanup_tmp_directories); keeping them
  aside instead lets a person see what a preemption left behind.
  """
  directory = epath.Path(directory)
  moved = []
  if _is_primary() and directory.exists():
    for path in sorted(directory.iterdir()):
      if path.is_dir() and _is_half_written(path):
        moved.append(quarantine(path, "it is a save that never finished", sync=False))
  _sync("restore_jax_quarantine_half_written")
  return moved


def quarantine_unreadable_metrics(directory: epath.PathLike) -> list[epath.Path]:
  """Moves steps whose metrics file does not parse out of `directory` (a best checkpoint's); returns where to.

  Orbax's CheckpointManager reads every step's metrics when it opens a directory and stops on bad JSON.
  """
  directory = epath.Path(directory)
  moved = []
  if _is_primary() and directory.exists():
    for path in sorted(directory.iterdir()):
      metrics = path / METRICS_FILE / METRICS_FILE
      if not (path.name.isdigit() and metrics.exists()):
        continue
      try:
        json.loads(metrics.read_text())
      except (ValueError, OSError) as e:
        moved.append(quarantine(path, f"its metrics could not be read ({_shorten(str(e))})", sync=False))
  _sync("restore_jax_quarantine_unreadable_metrics")
  return moved


def quarantine(path: epath.Path, reason: str, *, sync: bool = True) -> epath.Path | None:
  """Moves a checkpoint directory to `<parent>_quarantine/<unix time>/<name>` with a warning naming both paths.

  The name is kept as it was, so a person (or a test) finds it; the time keeps repeated moves of one step apart.
  """
  target = None
  if _is_primary():
    path = epath.Path(path)
    stamp = int(time.time())
    target = path.parent.parent / (path.parent.name + QUARANTINE_SUFFIX) / str(stamp) / path.name
    while target.exists():  # The same name moved twice within a second.
      stamp += 1
      target = target.parent.parent / str(stamp) / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    logging.warning("Moved checkpoint %s aside to %s because %s. It was not deleted; remove it yourself once "
                    "you no longer need it.", path, target, reason)
  if sync:
    _sync("restore_jax_quarantine")
  return target


def _is_half_written(path: epath.Path) -> bool:
  if TMP_MARKER in path.name:
    return True
  # On object stores orbax writes in place and marks completion with a file; a step directory without it is a
  # save that was cut short. Orbax picks the marker style by path (atomicity_defaults); so do we.
  return path.name.isdigit() and ocp.step.is_path_temporary(path)


# ---------------------------------------------------------------------------------------------------- Config


def check_config_compatible(workdir: epath.PathLike, config: ml_collections.ConfigDict, *,
                            sample_files: Mapping[str, str] | None = None) -> None:
  """Compares `config` with the workdir's recorded DIR/config.json before it is rewritten.

  Raises IncompatibleConfig naming every key that changes the saved state or the batches (STATE_KEYS), with old
  and new values; warns for keys that make the run no longer reproducible; logs the other changes.
  `sample_files` ({name: sha256} of the "samples" source now, see sources.sample_files) is compared with the
  record config.json keeps of them, with a warning naming every file that came, went or changed.
  Nothing to compare (a new workdir) is fine.
  """
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    return
  try:
    recorded = json.loads(path.read_text())
  except (ValueError, OSError) as e:
    logging.warning("Cannot read %s (%s): resuming without checking that the config still fits the checkpoints.",
                    path, e)
    return
  check_state_layout(recorded, path)
  recorded_files = recorded.pop(SAMPLE_FILES_KEY, None)
  if sample_files is not None and recorded_files is not None:
    _warn_if_samples_changed(recorded_files, sample_files, path)
  old = _flatten(recorded)
  # Compared as train.py writes it: through JSON, so tuples are lists and odd values are strings.
  new = _flatten(json.loads(json.dumps(config.to_dict(), default=str)))
  changed = sorted(k for k in old.keys() | new.keys() if old.get(k, _ABSENT) != new.get(k, _ABSENT))
  if not changed:
    return
  shaping = [k for k in changed if _under(k, STATE_KEYS) and not _under(k, START_ONLY_KEYS)]
  breaking = [k for k in shaping if k in old and k in new]
  unrecorded = [k for k in shaping if k not in breaking]
  risky = [k for k in changed if _under(k, REPRODUCIBILITY_KEYS)]
  other = [k for k in changed if k not in breaking and k not in unrecorded and k not in risky]
  describe = lambda keys: "\n".join(f"  {k}: {_show(old, k)} -> {_show(new, k)}" for k in keys)
  if breaking:
    raise IncompatibleConfig(
        f"This config differs from the one the checkpoints in {epath.Path(workdir)} were trained with "
        f"({path}) in keys that change the saved state or the batches:\n{describe(breaking)}\n"
        f"Train in a new --workdir to start a run with these values, or set them back to resume this one."
    )
  if unrecorded:
    logging.warning("Keys that shape the state were added or removed since %s was written; resuming on the "
                    "assumption that the defaults match (orbax stops if the shapes do not):\n%s",
                    path, describe(unrecorded))
  if risky:
    logging.warning("Resuming with changes that keep the checkpoints loadable but make the run no longer "
                    "reproducible from its start:\n%s", describe(risky))
  if other:
    logging.info("Config changes since %s was written:\n%s", path, describe(other))


def _warn_if_samples_changed(old: Mapping[str, str], new: Mapping[str, str], path: epath.PathLike) -> None:
  """The "samples" source is whatever photos the installed packages ship: a resume may see other ones."""
  removed, added = sorted(old.keys() - new.keys()), sorted(new.keys() - old.keys())
  changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
  if not (removed or added or changed):
    return
  lines = [f"  {what}: {name}" for what, names in (("gone", removed), ("new", added), ("changed", changed))
           for name in names]
  logging.warning("The sample photos (the 'samples' data source, shipped inside installed packages) differ from "
                  "the ones recorded in %s when this run started: the run no longer trains or evaluates on the "
                  "same images.\n%s", path, "\n".join(lines))


def check_state_layout(recorded: Mapping[str, Any], path: epath.PathLike) -> None:
  """Raises IncompatibleConfig for a workdir written before the state carried normalisation statistics.

  restore_jax 0.1 trained super-resolution only; its config.json has no `task` section and its checkpoints lack
  the `batch_stats` fields of today's GANState, so orbax cannot read them into it.
  """
  if "task" not in recorded:
    raise IncompatibleConfig(
        f"{path} was written by restore_jax 0.1 (it has no `task` section): its checkpoints hold the GAN state "
        "without the batch-norm and spectral-norm statistics this version keeps, so they cannot be resumed, "
        "evaluated or restored from. Train in a new --workdir, or use restore_jax 0.1 for that run.")


_ABSENT = object()


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping) and value:
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _under(key: str, names: tuple[str, ...]) -> bool:
  return any(key == name or key.startswith(name + ".") for name in names)


def _show(values: dict[str, Any], key: str) -> str:
  return "(absent)" if key not in values else json.dumps(values[key])


# ---------------------------------------------------------------------------------------------------- Helpers


def _shorten(text: str, limit: int = 300) -> str:
  text = " ".join(text.split())
  return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_primary() -> bool:
  return jax.process_index() == 0


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _all_processes_agree(ok: bool) -> bool:
  """True when `ok` holds on every process, so that all of them restore the same step."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))
