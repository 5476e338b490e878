"""Multi-host data parallelism, on one machine: two processes with two CPU devices each train exactly like one
process with four devices, because the global batch depends only on the seed and step.

Process 0 is started with main.py's --coordinator_address/--num_processes/--process_id flags, process 1 with the
JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID environment: both ways of joining a run are exercised.
"""

import socket
import subprocess
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cli import REPO, cli_env, train_command

STEPS = 2
# Adam divides each gradient component by its own RMS, so a component whose true gradient is ~0 takes a full-size
# step whose sign is float rounding, and rounding differs with the all-reduce's order (one process vs gloo). A
# larger epsilon damps those components and leaves every real difference in the computation visible: measured after
# one step, the two topologies then agree to ~1.5e-5 of each leaf's scale, where the default 1e-8 left critic biases
# apart by more than their own size.
ADAM_EPS = 1e-3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir: Path) -> list[str]:
  return train_command(workdir, f"--config.total_steps={STEPS}", f"--config.checkpoint_every={STEPS}",
                       f"--config.optim.eps={ADAM_EPS}")


def _final_state(workdir: Path) -> dict:
  """The saved state as arrays on one local device, whatever topology wrote it."""
  path = workdir / "checkpoints" / str(STEPS) / "state"
  checkpointer = ocp.StandardCheckpointer()
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        checkpointer.metadata(path).item_metadata)
  return checkpointer.restore(path, target)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  single = tmp_path_factory.mktemp("one_process")
  multi = tmp_path_factory.mktemp("two_processes")
  port = _free_port()
  flags = ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", "0"]
  environment = dict(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1")
  procs = [
      subprocess.Popen(_command(multi) + flags, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, env=cli_env(2)),
      subprocess.Popen(_command(multi), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=cli_env(2, **environment)),
  ]
  one = subprocess.run(_command(single), cwd=REPO, env=cli_env(4), capture_output=True, text=True, timeout=600)
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert one.returncode == 0, one.stderr[-3000:]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return single, multi, outputs


def _max_relative_difference(a, b) -> float:
  """max |a - b| over the leaf, in units of the leaf's largest magnitude."""
  a, b = np.asarray(a), np.asarray(b)
  return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def test_two_processes_match_one_process(runs):
  single, multi, outputs = runs
  assert "Process 0 of 2" in outputs[0] and "Process 1 of 2" in outputs[1]
  # Each process's log lines say which process wrote them.
  assert "[process 0/2] Mesh" in outputs[0] and "[process 1/2] Mesh" in outputs[1]
  # TensorBoard and config.json are written by process 0 alone.
  assert len(list(multi.glob("events.out.tfevents*"))) == 1 and (multi / "config.json").exists()
  a, b = ocp.tree.to_flat_dict(_final_state(single)), ocp.tree.to_flat_dict(_final_state(multi))
  assert a.keys() == b.keys()
  # Bounds measured on this test: generator and EMA agree to ~2e-7 of each leaf's scale, the critic to 5e-4 (its
  # penalty gradient at initialisation divides by input-gradient norms of ~0.005, which magnifies rounding).
  # Two processes that read different data, or skipped the cross-process gradient mean, miss by orders more.
  bounds = {"generator": 1e-5, "ema_params": 1e-5, "discriminator": 2e-3}
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
