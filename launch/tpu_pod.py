#!/usr/bin/env python3
"""Train on a Cloud TPU pod slice: create the VM, install on every worker, train on every worker, follow the logs,
delete. Every step is a gcloud command; --dry-run prints them instead of running them.

  python launch/tpu_pod.py all --name my-tpu --zone us-central2-b --accelerator v4-32 \\
      --config configs/sr_wgangp.py --workdir gs://my-bucket/runs/sr [--config.KEY=VALUE ...] [--dry-run]

Steps (run one, or `all` in order): create, setup, train, logs (worker 0's log, followed until training ends),
delete. On a pod slice every worker is one JAX
process; `jax.distributed.initialize()` finds the others by itself (restore_jax.main calls it), so the train
command is the same on every worker and needs no coordinator flags. The workdir must be a bucket every worker
can write (orbax saves collectively, TensorBoard is written by process 0).
"""

import argparse
import shlex
import subprocess
import sys

STEPS = ("create", "setup", "train", "logs", "delete")
LOG = "restore_jax_train.log"


def commands(args: argparse.Namespace, overrides: list[str]) -> dict[str, list[list[str]]]:
  """The gcloud command lines of every step, as argument lists."""
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = [args.name, f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
  ssh = lambda worker, remote: tpu + ["ssh"] + where + [f"--worker={worker}", f"--command={remote}"]
  setup = (f"set -e; rm -rf restore_jax && git clone --depth 1 --branch {shlex.quote(args.branch)} "
           f"{shlex.quote(args.repo)} restore_jax && cd restore_jax && python3 -m pip install -q -e '.[tpu]'")
  train = ["python3", "-m", "restore_jax.main", f"--config={args.config}", f"--workdir={args.workdir}", *overrides]
  run = f"cd restore_jax && nohup {shlex.join(train)} > {LOG} 2>&1 &"
  create = tpu + ["create"] + where + [f"--accelerator-type={args.accelerator}", f"--version={args.version}"]
  if args.spot:
    create.append("--spot")
  return {
      "create": [create],
      "setup": [ssh("all", setup)],
      "train": [ssh("all", run)],
      "logs": [ssh("0", f"cd restore_jax; pid=$(pgrep -o -f restore_jax.main); if [ -n \"$pid\" ]; then "
                        f"tail -n +1 -f --pid=$pid {LOG}; else cat {LOG}; fi")],
      "delete": [tpu + ["delete"] + where + ["--quiet"]],
  }


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("step", choices=STEPS + ("all",))
  parser.add_argument("--name", required=True, help="TPU VM name.")
  parser.add_argument("--zone", required=True, help="e.g. us-central2-b (where your TPU quota is).")
  parser.add_argument("--project", default=None, help="GCP project (default: gcloud's configured one).")
  parser.add_argument("--accelerator", default="v4-32", help="Accelerator type, e.g. v4-32, v5litepod-16.")
  parser.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU VM software version.")
  parser.add_argument("--spot", action="store_true", help="Spot VM: cheaper, preemptible (runs resume).")
  parser.add_argument("--repo", default="https://github.com/your-org/restore_jax.git", help="Where workers clone from.")
  parser.add_argument("--branch", default="main")
  parser.add_argument("--config", default="configs/sr_wgangp.py")
  parser.add_argument("--workdir", help="gs://bucket/path every worker can write (needed by train).")
  parser.add_argument("--dry-run", action="store_true", help="Print the commands instead of running them.")
  args, overrides = parser.parse_known_args(argv)
  bad = [o for o in overrides if not o.startswith("--config.")]
  if bad:
    parser.error(f"unknown arguments {bad}; only --config.KEY=VALUE overrides pass through to training.")
  if args.step in ("train", "all") and not (args.workdir or "").startswith("gs://"):
    parser.error("train needs --workdir gs://BUCKET/PATH: every worker writes checkpoints there.")
  return args, overrides


def main(argv: list[str]) -> int:
  args, overrides = parse(argv)
  planned = commands(args, overrides)
  for step in STEPS if args.step == "all" else (args.step,):
    for command in planned[step]:
      print(f"[{step}] {shlex.join(command)}", flush=True)
      if not args.dry_run:
        result = subprocess.run(command)
        if result.returncode:
          return result.returncode
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
