"""Multi-host data parallelism, on one machine: two processes with two CPU devices each train exactly like one
process with four devices, because the global batch depends only on the seed and step.

Process 0 is started with main.py's --coordinator_address/--num_processes/--process_id flags, process 1 with the
JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID environment: both ways of joining a run are exercised.
"""

import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cli import REPO, assert_trees_equal, cli_env, train_command

STEPS = 2  # Compared across topologies after this many steps (the bounds below were measured there).
LONG = 8  # Steps of the two-process runs that are preempted, restarted and compared bit for bit.
# Adam divides each gradient component by its own RMS, so a component whose true gradient is ~0 takes a full-size
# step whose sign is float rounding, and rounding differs with the all-reduce's order (one process vs gloo). A
# larger epsilon damps those components and leaves every real difference in the computation visible: measured after
# one step, the two topologies then agree to ~1.5e-5 of each leaf's scale, where the default 1e-8 left critic biases
# apart by more than their own size.
ADAM_EPS = 1e-3
# WGAN-GP's penalty gradient divides by the critic's input-gradient norms, ~0.005 at initialisation, which magnifies
# rounding in the critic by a factor that depends on the CPU: 5e-4 of a leaf's scale on one machine, 1.7e-2 on
# another. Data parallelism is what is compared here, so these runs train plain WGAN, without the penalty (its sharded
# form is checked against one device in test_step.py).
COMMON = (f"--config.optim.eps={ADAM_EPS}", "--config.loss.adversarial=wgan", "--config.loss.gp_weight=0",
          "--config.log_every=1", "--config.eval.holdout=0",
          "--config.eval_every=1000", "--config.keep_checkpoints=10")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _state(workdir: Path, step: int) -> dict:
  """A saved state as arrays on one local device, whatever topology wrote it."""
  path = workdir / "checkpoints" / str(step) / "state"
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(path).item_metadata)
  return checkpointer.restore(path, target)


class TwoProcesses:
  """Two training processes joined on 127.0.0.1, two CPU devices each; stderr collected line by line.

  Process 0 joins with the --coordinator_address/--num_processes/--process_id flags, process 1 through the
  JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID environment. With `sigterm_after`, process 1 alone is
  sent SIGTERM once it has logged that step: a preemption that reaches one host of a pod.
  """

  def __init__(self, workdir: Path, *extra: str, sigterm_after: int | None = None):
    port = _free_port()
    command = train_command(workdir, *COMMON, *extra)
    flags = ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", "0"]
    environment = dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1")
    self.procs = [
        subprocess.Popen(command + flags, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         env=cli_env(2)),
        subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         env=cli_env(2, **environment)),
    ]
    self.logs: list[list[str]] = [[], []]
    self._sigterm_after = sigterm_after
    self._readers = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(2)]
    for reader in self._readers:
      reader.start()

  def _read(self, i: int) -> None:
    for line in self.procs[i].stderr:
      self.logs[i].append(line)
      if i == 1 and self._sigterm_after is not None and re.search(rf"\] \[{self._sigterm_after}\] ", line):
        self.procs[1].send_signal(signal.SIGTERM)
        self._sigterm_after = None

  def wait(self) -> "TwoProcesses":
    for proc in self.procs:
      proc.wait(timeout=900)
    for reader in self._readers:
      reader.join()
    self.returncodes = [p.returncode for p in self.procs]
    self.outputs = ["".join(lines) for lines in self.logs]
    return self


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Started together: two processes for LONG steps; the same, preempted on one host; one process with four
  devices for STEPS steps. Then the preempted pair is restarted."""
  single, multi, preempted = (tmp_path_factory.mktemp(name) for name in ("one_process", "two_processes",
                                                                          "preempted"))
  whole = TwoProcesses(multi, f"--config.total_steps={LONG}", f"--config.checkpoint_every={STEPS}")
  stopped = TwoProcesses(preempted, f"--config.total_steps={LONG}", "--config.checkpoint_every=1000",
                         sigterm_after=3)
  one = subprocess.run(train_command(single, *COMMON, f"--config.total_steps={STEPS}",
                                     f"--config.checkpoint_every={STEPS}"),
                       cwd=REPO, env=cli_env(4), capture_output=True, text=True, timeout=900)
  whole.wait()
  stopped.wait()
  assert one.returncode == 0, one.stderr[-3000:]
  for code, out in zip(whole.returncodes, whole.outputs):
    assert code == 0, out[-3000:]
  stopped_at = sorted(int(p.name) for p in (preempted / "checkpoints").iterdir() if p.name.isdigit())
  restarted = TwoProcesses(preempted, f"--config.total_steps={LONG}", "--config.checkpoint_every=1000").wait()
  return dict(single=single, multi=multi, preempted=preempted, whole=whole, stopped=stopped, stopped_at=stopped_at,
              restarted=restarted)


def _max_relative_difference(a, b) -> float:
  """max |a - b| over the leaf, in units of the leaf's largest magnitude."""
  a, b = np.asarray(a), np.asarray(b)
  return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def test_two_processes_match_one_process(runs):
  single, multi, outputs = runs["single"], runs["multi"], runs["whole"].outputs
  assert "Process 0 of 2" in outputs[0] and "Process 1 of 2" in outputs[1]
  # Each process's log lines say which process wrote them.
  assert "[process 0/2] Mesh" in outputs[0] and "[process 1/2] Mesh" in outputs[1]
  # TensorBoard and config.json are written by process 0 alone.
  assert len(list(multi.glob("events.out.tfevents*"))) == 1 and (multi / "config.json").exists()
  a, b = ocp.tree.to_flat_dict(_state(single, STEPS)), ocp.tree.to_flat_dict(_state(multi, STEPS))
  assert a.keys() == b.keys()
  # Measured on this test: generator and EMA leaves agree to 5e-7 of their scale or better, the critic's to 1.3e-5
  # (its last bias). Biases start at zero, so they show any difference in the updates: two more steps on other data
  # move them by 0.2 to 2 of their scale. The bounds leave room for another CPU's rounding and still catch processes
  # that read different data or skipped the cross-process gradient mean.
  bounds = {"generator": 1e-5, "ema_params": 1e-5, "discriminator": 1e-3}
  compared = 0
  for key in a:
    if key[0] in bounds and "params" in key:
      assert _max_relative_difference(a[key], b[key]) < bounds[key[0]], key
      compared += 1
  assert compared > 40
  for key in [k for k in a if k[-1] == "count"] + [("step",)]:
    assert int(np.asarray(a[key])) == int(np.asarray(b[key])), key
  np.testing.assert_array_equal(jax.random.key_data(a[("rng",)]), jax.random.key_data(b[("rng",)]))
  assert int(np.asarray(a[("step",)])) == STEPS


def test_sigterm_to_one_process_stops_both_at_the_same_step_with_one_checkpoint(runs):
  stopped = runs["stopped"]
  assert stopped.returncodes == [75, 75], [out[-2000:] for out in stopped.outputs]
  steps = [int(re.search(r"Stopped by SIGTERM after step (\d+)", out).group(1)) for out in stopped.outputs]
  assert steps[0] == steps[1] and 3 <= steps[0] < LONG
  assert runs["stopped_at"] == [steps[0]]  # One committed checkpoint, at the step where both stopped.
  assert not list((runs["preempted"] / "checkpoints").glob("*orbax-checkpoint-tmp*"))


def test_restarting_both_continues_bit_identically(runs):
  restarted = runs["restarted"]
  assert restarted.returncodes == [0, 0], [out[-2000:] for out in restarted.outputs]
  assert all(f"Resumed from the checkpoint of step {runs['stopped_at'][0]}" in out for out in restarted.outputs)
  as_numbers = lambda tree: jax.tree.map(
      lambda x: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x),
      tree)
  assert_trees_equal(as_numbers(_state(runs["preempted"], LONG)), as_numbers(_state(runs["multi"], LONG)))
