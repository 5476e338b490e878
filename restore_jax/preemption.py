"""Preemption: SIGTERM or SIGINT becomes "finish this step, save, exit 75" instead of a lost run.

Schedulers (Kubernetes, Slurm, preemptible TPU/GPU VMs) send SIGTERM some seconds before they kill a job. The
watcher turns the signal into a flag the train loop reads between steps, so the step in flight completes, the
checkpoint is written and committed, and the process exits with `EXIT_PREEMPTED` (sysexits' EX_TEMPFAIL: "try
again"), which a requeueing script can tell apart from a crash. The watcher is installed before anything else
starts, so a signal during start-up (restoring, compiling) also ends in EXIT_PREEMPTED, as soon as it is safe.
A second signal while saving falls back to the default behaviour, so an impatient Ctrl-C still kills the process.

With several processes every one of them must stop at the same step, or the collective save hangs. There JAX's
own preemption sync (started by `jax.distributed.initialize`, listening for SIGTERM) agrees on the step, as orbax
uses it; the watcher leaves SIGTERM to it and handles SIGINT by agreeing through a small all-gather every
`agree_every` steps (a collective per step would cost a host sync per step).
"""

import signal
import threading
from types import FrameType

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: the checkpoint is saved; run the same command again to continue.


class PreemptionWatcher:
  """Flags SIGTERM/SIGINT for the loop; `should_stop(step)` is True at the step where every process stops."""

  def __init__(self, agree_every: int = 10):
    self.agree_every = max(1, int(agree_every))
    self.signal_name: str | None = None
    self._previous: dict[int, object] = {}
    self._multiprocess = jax.process_count() > 1
    if threading.current_thread() is not threading.main_thread():
      logging.warning("Not on the main thread: SIGTERM/SIGINT will not trigger a checkpoint before exiting.")
      return
    # With several processes, SIGTERM belongs to JAX's preemption notifier (see should_stop).
    signals = (signal.SIGINT,) if self._multiprocess else (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
      self._previous[signum] = signal.signal(signum, self._on_signal)

  def _on_signal(self, signum: int, frame: FrameType | None) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.signal_name is not None:  # Second signal: stop waiting for the save.
      logging.warning("Second %s: exiting without waiting for the checkpoint.", name)
      self.close()
      signal.raise_signal(signum)
      return
    self.signal_name = name
    logging.warning("Received %s: finishing the current step, then saving a checkpoint and exiting.", name)

  def should_stop(self, step: int) -> bool:
    """Whether to stop after `step`. Called once per step, by every process, with the same step."""
    if not self._multiprocess:
      return self.signal_name is not None
    stop = multihost_utils.reached_preemption_sync_point(step)
    if stop and self.signal_name is None:
      self.signal_name = "SIGTERM"
    if stop or step % self.agree_every:
      return stop
    flags = multihost_utils.process_allgather(np.int32(self.signal_name is not None))
    return bool(np.any(flags))

  def stop_requested(self) -> bool:
    """Whether a signal has arrived on any process, for the loop's start-up, before any step has run.

    Single-process: SIGTERM or SIGINT. Several processes: SIGINT, agreed through an all-gather; SIGTERM belongs
    to JAX's preemption sync there, which the first steps' `should_stop` consults.
    """
    asked = self.signal_name is not None
    if not self._multiprocess:
      return asked
    return bool(np.any(multihost_utils.process_allgather(np.int32(asked))))

  def close(self) -> None:
    """Puts the previous handlers back."""
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
