"""Checkpoints: the GANState and the grain iterator saved together by one orbax CheckpointManager.

Saving the data iterator beside the model means a resumed run sees exactly the batches it would have seen.
"""

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from restore_jax.state import GANState


def make_manager(directory: epath.PathLike, *, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(epath.Path(directory), item_names=("state", "data"), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: GANState, data_iterator) -> None:
  """Starts an asynchronous save; orbax finishes writing in the background."""
  manager.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iterator)
      ),
      force=True,
  )


def restore_latest(manager: ocp.CheckpointManager, state: GANState, data_iterator) -> tuple[GANState, int]:
  """Restores the newest checkpoint into `state`'s shapes and shardings and rewinds `data_iterator`.

  Returns the state and the step it was saved at (0 and `state` unchanged when there is none).
  """
  step = manager.latest_step()
  if step is None:
    return state, 0
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = manager.restore(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(data_iterator)
      ),
  )
  logging.info("Resumed from the checkpoint of step %d in %s.", step, manager.directory)
  return restored["state"], step
