"""restore_jax's training step against an eager PyTorch peer of it, at one shape and thread count, in one run.

    python benchmarks/peer.py --output benchmarks/results/peer_rrdb6x64_b4_128.json \
        [--num-block 6 --num-feat 64 --num-grow-ch 32 --batch 4 --hr 128] [--threads 2] [--rounds 3] \
        [--steps 5 --warmup 2] [--dtype float32] [--peer ../shared/bench/peer_torch/bench.py] \
        [--peer-python ${TMPDIR:-/tmp}/peer-venv/bin/python]

The peer is a PyTorch script kept outside this repository (by default ../shared/bench/peer_torch/bench.py, next to
the checkout, or ../../shared/... from a git worktree). It times one WGAN-GP super-resolution step of the same networks and losses (RRDBNet and the VGG-style
critic without batch norm; MSE + 1e-3 adversarial; penalty weight 10) on random data. If you do not have it, point
--peer at any copy; it needs its own virtual environment with a CPU build of torch:

    python3 -m venv "${TMPDIR:-/tmp}/peer-venv"
    "${TMPDIR:-/tmp}/peer-venv/bin/pip" install torch==2.13.0 numpy

Each round runs, one after the other, `python -m restore_jax.bench` (sr_wgangp:bench at the given shape) and the
peer twice: with `--share-g-forward` (one generator forward per step, feeding both updates, as restore_jax's step
and BasicSR's ESRGAN model do) and with its default (a no-grad forward for the critic and a second one for the
generator). Every process is pinned to the same `--threads` CPUs (XLA sizes its thread pool from the CPUs a
process may run on; torch gets `--threads`). The machine is shared, so only ratios within a round mean much: the
JSON keeps every round's numbers and ratios and their medians, with the load average around each run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PEER_PATH = os.path.join("shared", "bench", "peer_torch", "bench.py")
# ../shared beside the checkout; a git worktree kept one level further down (e.g. wt/NAME) finds it one level up.
DEFAULT_PEER = next((p for p in (os.path.join(_REPO, "..", _PEER_PATH), os.path.join(_REPO, "..", "..", _PEER_PATH))
                     if os.path.isfile(p)), os.path.join(_REPO, "..", _PEER_PATH))
DEFAULT_PEER_PYTHON = os.path.join(os.environ.get("TMPDIR", "/tmp"), "peer-venv", "bin", "python")


def _pinned(cpus: list[int]):
  return lambda: os.sched_setaffinity(0, cpus)


def _run_json(command: list[str], cpus: list[int], env: dict[str, str] | None = None) -> dict:
  """Runs a benchmark that writes JSON to the path given as its last argument; returns that JSON and the load."""
  with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
    path = f.name
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  done = subprocess.run(command + [path], cwd=_REPO, preexec_fn=_pinned(cpus), env=env, capture_output=True,
                        text=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                       f"{done.stderr[-3000:]}")
  with open(path) as f:
    result = json.load(f)
  os.unlink(path)
  result["wall_s"] = time.perf_counter() - start
  result["load_1min_before"], result["load_1min_after"] = load_before, os.getloadavg()[0]
  return result


def ours(args, cpus: list[int]) -> dict:
  overrides = [f"--config.batch_size={args.batch}", f"--config.data.crop_size={args.hr}",
               f"--config.discriminator.input_size={args.hr}", f"--config.generator.num_block={args.num_block}",
               f"--config.generator.num_feat={args.num_feat}", f"--config.generator.num_grow_ch={args.num_grow_ch}",
               "--config.optim.n_critic=1"]
  command = [sys.executable, "-m", "restore_jax.bench", "--config", "configs/sr_wgangp.py:bench", *overrides,
             f"--steps={args.steps}", f"--warmup={args.warmup}", f"--dtype={args.dtype}",
             f"--pipeline_batches={args.pipeline_batches}", "--output"]
  return _run_json(command, cpus)


def peer(args, cpus: list[int], share_g_forward: bool) -> dict:
  command = [args.peer_python, args.peer, "--num-block", str(args.num_block), "--num-feat", str(args.num_feat),
             "--num-grow-ch", str(args.num_grow_ch), "--batch", str(args.batch), "--hr", str(args.hr),
             "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(len(cpus))]
  if share_g_forward:
    command.append("--share-g-forward")
  return _run_json(command + ["--output"], cpus)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num-block", type=int, default=6)
  parser.add_argument("--num-feat", type=int, default=64)
  parser.add_argument("--num-grow-ch", type=int, default=32)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--hr", type=int, default=128)
  parser.add_argument("--threads", type=int, default=2, help="CPUs every benchmark process is pinned to")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--pipeline-batches", type=int, default=0, help="also time our input pipeline (0: no)")
  parser.add_argument("--peer", default=DEFAULT_PEER, help="the PyTorch peer's bench.py")
  parser.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON, help="a Python with torch for the peer")
  parser.add_argument("--output", required=True)
  args = parser.parse_args(argv)
  if not os.path.isfile(args.peer):
    parser.error(f"No peer at {args.peer}: pass --peer PATH/TO/peer_torch/bench.py (see this script's help).")
  if not os.path.isfile(args.peer_python):
    parser.error(f"No Python at {args.peer_python}: create the peer's venv (see this script's help) or pass "
                 "--peer-python.")
  available = sorted(os.sched_getaffinity(0))
  if args.threads > len(available):
    parser.error(f"--threads {args.threads} but only {len(available)} CPUs are available.")
  cpus = available[:args.threads]

  rounds = []
  for r in range(args.rounds):
    row = {"ours": ours(args, cpus), "peer_shared_forward": peer(args, cpus, True),
           "peer_default": peer(args, cpus, False)}
    mine = row["ours"]["images_per_sec"]
    row["ratio_vs_shared_forward"] = mine / row["peer_shared_forward"]["images_per_sec"]
    row["ratio_vs_default"] = mine / row["peer_default"]["images_per_sec"]
    print(f"round {r + 1}/{args.rounds}: ours {mine:.3f} img/s, peer (shared G forward) "
          f"{row['peer_shared_forward']['images_per_sec']:.3f}, peer (default) "
          f"{row['peer_default']['images_per_sec']:.3f}; ratios {row['ratio_vs_shared_forward']:.2f}x, "
          f"{row['ratio_vs_default']:.2f}x; load {row['ours']['load_1min_before']:.1f}", flush=True)
    rounds.append(row)

  median = lambda key: statistics.median(row[key] for row in rounds)
  summary = {
      "shape": {"num_block": args.num_block, "num_feat": args.num_feat, "num_grow_ch": args.num_grow_ch,
                "batch_size": args.batch, "hr_size": args.hr, "n_critic": 1, "threads": args.threads,
                "dtype": args.dtype},
      "ours_images_per_sec_median": statistics.median(r["ours"]["images_per_sec"] for r in rounds),
      "ours_fraction_of_peak_median": statistics.median(r["ours"]["fraction_of_peak"] for r in rounds),
      "peer_shared_forward_images_per_sec_median": statistics.median(
          r["peer_shared_forward"]["images_per_sec"] for r in rounds),
      "peer_default_images_per_sec_median": statistics.median(r["peer_default"]["images_per_sec"] for r in rounds),
      "ratio_vs_shared_forward_median": median("ratio_vs_shared_forward"),
      "ratio_vs_shared_forward_range": [min(r["ratio_vs_shared_forward"] for r in rounds),
                                        max(r["ratio_vs_shared_forward"] for r in rounds)],
      "ratio_vs_default_median": median("ratio_vs_default"),
      "ratio_vs_default_range": [min(r["ratio_vs_default"] for r in rounds),
                                 max(r["ratio_vs_default"] for r in rounds)],
      "command": " ".join([os.path.basename(sys.executable), "benchmarks/peer.py", *(argv or sys.argv[1:])]),
      "rounds": rounds,
  }
  with open(args.output, "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
  print(f"median ratio {summary['ratio_vs_shared_forward_median']:.2f}x against the peer with one generator "
        f"forward, {summary['ratio_vs_default_median']:.2f}x against its default; wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
