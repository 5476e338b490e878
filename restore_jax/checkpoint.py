"""Checkpoints: the GANState and the grain iterator saved together by one orbax CheckpointManager.

Saving the data iterator beside the model means a resumed run sees exactly the batches it would have seen.

A run that lasts days meets half-written and damaged checkpoints (a preempted save, a bad disk, a copy cut short).
Restoring walks the steps from the newest down and takes the first that reads back whole; what it skips is moved
to `<checkpoints>_quarantine/` with a warning, never deleted, so a person can look at it and orbax can write that
step number again. Every path goes through etils.epath, so a workdir may be `gs://bucket/run`.
"""

import json
import math
import os
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax
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

# Config keys (flattened, dotted) whose change alters the saved state's shapes or structure, what a batch holds, or
# the form of the saved data iterator (grain's multiprocess iterator keeps one state per worker): a checkpoint saved
# under one value cannot be resumed under another. A name matches itself and every key below it.
STATE_KEYS = ("task", "generator", "discriminator", "discriminator_conditional", "batch_size", "data.crop_size",
              "degradation", "optim.grad_clip_norm", "data.num_workers")
# Keys under STATE_KEYS that only matter when a run starts: where the generator's first weights come from.
START_ONLY_KEYS = ("generator.init_from", "generator.init_from_ema")
# Keys that leave the state loadable but change which batches or random numbers the run sees from here on.
REPRODUCIBILITY_KEYS = ("seed", "optim.n_critic", "data.source", "data.augment", "data.tfds_data_dir", "data.image_key",
                        "eval.holdout", "eval.data")


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
  options = ocp.CheckpointManagerOptions(
      max_to_keep=1, create=True, enable_async_checkpointing=True, cleanup_tmp_directories=False
  )
  return ocp.CheckpointManager(directory, item_names=("state", "metrics", "digest"), options=options)


def open_read_only(directory: epath.PathLike, item_names: tuple[str, ...] = ("state", "data", "digest")
                   ) -> ocp.CheckpointManager:
  """A manager that lists and reads `directory` but never writes, creates or moves anything (for inference)."""
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, cleanup_tmp_directories=False)
  return ocp.CheckpointManager(epath.Path(directory), item_names=item_names, options=options)


# ---------------------------------------------------------------------------------------------------- Save


def save(manager: ocp.CheckpointManager, step: int, state: GANState, data_iterator) -> None:
  """Starts an asynchronous save; orbax finishes writing in the background."""
  manager.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator),
          digest=ocp.args.JsonSave(state_digest(state)),
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
          digest=ocp.args.JsonSave(state_digest(state)),
      ),
      force=True,
  )
  return True


def best_metrics(manager: ocp.CheckpointManager) -> tuple[int, dict[str, float]] | None:
  """(step, metrics) of the best checkpoint in a best manager's directory, or None when it holds none."""
  found = _restore_newest_good(manager, lambda: dict(metrics=ocp.args.JsonRestore()),
                               move_aside=True)
  if found is None:
    return None
  restored, step = found
  return step, dict(restored["metrics"])


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

  For inference, which needs no data iterator. With move_aside=False damaged steps are skipped with a warning
  but left where they are (a training run may still be writing into the directory).
  Raises FileNotFoundError when there is no checkpoint (or not the asked step), NoGoodCheckpoint when there are
  some and none (or not the asked one) can be read.
  """
  items = lambda: dict(state=ocp.args.StandardRestore(abstract_state))
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


def state_digest(state: Any) -> dict[str, int | None]:
  """CRC32 of every leaf's bytes, by tree path: saved beside the state and compared after restoring it.

  Orbax's array chunks carry no checksum (zarr with zstd), so bytes overwritten inside a data file can restore
  without an error, as silently wrong weights. Leaves this process cannot see whole get None (not checked).
  """
  leaves, _ = jax.tree_util.tree_flatten_with_path(state)
  return {jax.tree_util.keystr(path): _crc32(leaf) for path, leaf in leaves}


class DigestMismatch(ValueError):
  """A restored state's bytes differ from the ones that were saved."""


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
    items = dict(items, digest=ocp.args.JsonRestore())
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  if check:
    saved, now = restored["digest"], state_digest(restored["state"])
    bad = [k for k, v in now.items() if v is not None and saved.get(k) is not None and saved[k] != v]
    missing = sorted(saved.keys() ^ now.keys())
    if bad or missing:
      raise DigestMismatch(f"the restored state differs from the saved one in {len(bad)} array(s) "
                           f"{bad[:3]} and {len(missing)} path(s) {missing[:3]}")
  return restored


def _restore_newest_good(
    manager: ocp.CheckpointManager, items: Callable[[], dict[str, Any]], *, move_aside: bool
) -> tuple[dict[str, Any], int] | None:
  """Tries the steps newest first; returns (restored items, step) of the first that reads, None when none exist.

  The steps that failed before it are damaged (an older one of the same run reads fine) and are quarantined when
  `move_aside`. When every step fails the cause is more likely the reader's side (storage access, a changed
  state structure) than damage, so nothing is moved and NoGoodCheckpoint says what each step raised.
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
  if failures and found is None:
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


def check_config_compatible(workdir: epath.PathLike, config: ml_collections.ConfigDict) -> None:
  """Compares `config` with the workdir's recorded DIR/config.json before it is rewritten.

  Raises IncompatibleConfig naming every key that changes the saved state or the batches (STATE_KEYS), with old
  and new values; warns for keys that make the run no longer reproducible; logs the other changes.
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
