"""No recompilation: a training run compiles its step once, and nothing after its first evaluation and checkpoint.

Counted with JAX's own monitoring events (one per lowering of a jitted function, persistent-cache hit or not),
through a run of the tiny recipe with three rounds of logging, evaluation and checkpointing.
"""

import pytest

from configs import sr_wgangp
from restore_jax import bench, checkpoint, train


@pytest.fixture(scope="module")
def events(tmp_path_factory):
  """Lowered function names and checkpoint markers, in the order they happened."""
  config = sr_wgangp.get_config("tiny")
  config.total_steps, config.log_every, config.eval_every, config.checkpoint_every = 6, 2, 2, 2
  real_save = checkpoint.save
  with bench.record_lowerings() as happened, pytest.MonkeyPatch.context() as patch:
    def save(manager, step, *args, **kwargs):
      happened.append(f"checkpoint {step}")
      return real_save(manager, step, *args, **kwargs)

    patch.setattr(checkpoint, "save", save)
    train.train_and_evaluate(config, str(tmp_path_factory.mktemp("run")))
  return list(happened)


def test_the_step_is_compiled_once(events):
  assert events.count("jit(train_step)") == 1, events


def test_nothing_is_compiled_after_the_first_evaluation_and_checkpoint(events):
  checkpoints = [e for e in events if e.startswith("checkpoint ")]
  assert checkpoints == ["checkpoint 2", "checkpoint 4", "checkpoint 6"], events
  first = events.index("checkpoint 2")
  # Steps 3-6, two more evaluations of the held-out photo, image grids, metric means and two more checkpoints.
  assert events[first + 1:] == ["checkpoint 4", "checkpoint 6"], events[first + 1:]
  assert "jit(train_step)" in events[:first]
