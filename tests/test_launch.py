"""The launch scripts in --dry-run mode: the commands they would issue, checked word by word."""

import os
import shlex
import subprocess
import sys

import pytest

from cli import REPO

TRAIN = ["-m", "restore_jax.main"]


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env=dict(os.environ, **env))


def _lines(proc: subprocess.CompletedProcess) -> list[str]:
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.strip().splitlines()


def test_tpu_pod_dry_run_prints_every_step_in_order():
  lines = _lines(_run([sys.executable, "launch/tpu_pod.py", "all", "--name", "pod", "--zone", "us-central2-b",
                       "--accelerator", "v4-32", "--project", "proj", "--config", "configs/sr_wgangp.py",
                       "--workdir", "gs://bucket/run", "--config.batch_size=64", "--spot", "--dry-run"]))
  assert [line.split("]")[0][1:] for line in lines] == ["create", "setup", "train", "logs", "delete"]
  create, setup, train, logs, delete = (shlex.split(line.split("] ", 1)[1]) for line in lines)
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
  assert {"pod", "--zone=us-central2-b", "--project=proj", "--accelerator-type=v4-32", "--spot"} <= set(create)
  assert "--worker=all" in setup and "pip install -q -e '.[tpu]'" in setup[-1] and "git clone" in setup[-1]
  assert "--worker=all" in train
  remote = shlex.split(train[-1].removeprefix("--command="))
  assert remote[:6] == ["cd", "restore_jax", "&&", "nohup", "python3", "-m"]
  assert remote[6:10] == ["restore_jax.main", "--config=configs/sr_wgangp.py", "--workdir=gs://bucket/run",
                          "--config.batch_size=64"]
  assert "--coordinator_address" not in train[-1]  # TPU pods find their peers by themselves.
  assert "--worker=0" in logs and "tail" in logs[-1]
  assert delete[4] == "delete" and "--quiet" in delete


def test_tpu_pod_refuses_a_local_workdir_and_unknown_arguments():
  proc = _run([sys.executable, "launch/tpu_pod.py", "train", "--name", "p", "--zone", "z", "--workdir", "runs/x",
               "--dry-run"])
  assert proc.returncode != 0 and "gs://" in proc.stderr
  proc = _run([sys.executable, "launch/tpu_pod.py", "create", "--name", "p", "--zone", "z", "--batch", "8",
               "--dry-run"])
  assert proc.returncode != 0 and "--batch" in proc.stderr


def test_gpu_node_one_process_for_all_gpus():
  lines = _lines(_run(["bash", "launch/gpu_node.sh", "--config", "configs/sr_wgangp.py", "--workdir", "runs/sr",
                       "--gpus", "4", "--dry-run", "--config.batch_size=32"], PYTHON="python3"))
  assert lines == ["python3 -m restore_jax.main --config configs/sr_wgangp.py --workdir runs/sr "
                   "--config.batch_size=32"]


def test_gpu_node_one_process_per_gpu_joins_through_the_coordinator():
  lines = _lines(_run(["bash", "launch/gpu_node.sh", "--config", "c.py", "--workdir", "w", "--gpus", "3",
                       "--per-gpu", "--port", "4000", "--dry-run"], PYTHON="python3"))
  assert len(lines) == 3
  for i, line in enumerate(lines):
    words = shlex.split(line.split(" > ")[0])
    assert words[:2] == ["env", f"CUDA_VISIBLE_DEVICES={i}"]
    assert words[2:5] == ["python3"] + TRAIN
    flags = dict(zip(words[5::2], words[6::2]))
    assert flags == {"--config": "c.py", "--workdir": "w", "--coordinator_address": "127.0.0.1:4000",
                     "--num_processes": "3", "--process_id": str(i)}
    assert line.endswith(f"> w/logs/process_{i}.log 2>&1 &")


def test_gpu_node_needs_config_and_workdir():
  proc = _run(["bash", "launch/gpu_node.sh", "--config", "c.py", "--gpus", "2", "--dry-run"])
  assert proc.returncode == 2 and "--workdir" in proc.stderr


def test_slurm_script_runs_one_srun_task_per_node():
  lines = _lines(_run(["bash", "launch/slurm.sbatch", "--config.seed=3"], CONFIG="configs/sr_wgangp.py",
                      WORKDIR="/shared/runs/sr", DRY_RUN="1"))
  assert lines == ["srun --kill-on-bad-exit=1 python3 -m restore_jax.main --config configs/sr_wgangp.py "
                   "--workdir /shared/runs/sr --config.seed=3"]
  header = (REPO / "launch" / "slurm.sbatch").read_text()
  assert "#SBATCH --ntasks-per-node=1" in header and "#SBATCH --requeue" in header
  proc = _run(["bash", "launch/slurm.sbatch"], DRY_RUN="1", CONFIG="", WORKDIR="")
  assert proc.returncode != 0 and "CONFIG" in proc.stderr


@pytest.mark.parametrize("flags, message", [
    (["--num_processes", "2"], "--coordinator_address, --process_id missing"),
    (["--coordinator_address", "127.0.0.1:1", "--num_processes", "2", "--process_id", "2"], "--process_id must be"),
])
def test_main_refuses_half_given_process_flags(tmp_path, flags, message):
  proc = _run([sys.executable, "-m", "restore_jax.main", "--config", "configs/sr_wgangp.py:tiny", "--workdir",
               str(tmp_path / "run"), *flags], JAX_PLATFORMS="cpu")
  assert proc.returncode != 0 and message in proc.stderr
  assert not (tmp_path / "run").exists()  # Refused before anything was written.
