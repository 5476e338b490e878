"""How the training step's time grows with batch and crop size, and float32 against bfloat16, beside the peer.

    python benchmarks/scaling.py --output benchmarks/results/scaling_rrdb6x64.json --markdown benchmarks/scaling.md \
        [--batches 1 2 4 8] [--crops 64 128 192] [--steps 3 --warmup 1] [--threads 2] [--no-peer]

At RRDB 6 blocks x 64 features (growth 32), n_critic 1, every point runs `python -m restore_jax.bench` (the real
sr_wgangp step) and, unless --no-peer, the PyTorch peer with one generator forward per step, one after the other,
pinned to the same CPUs (benchmarks/peer.py says where the peer lives and how to make its virtual environment).
Batch sizes run at 128 px crops, crop sizes at batch 4, and the bfloat16 point at batch 4, 128 px. The JSON keeps
every run's full output and the load average around it; the markdown is the table in benchmarks/README.md.
"""

import argparse
import json
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer as peer_lib  # noqa: E402  # pylint: disable=g-import-not-at-top


def _point_args(args, batch: int, hr: int, dtype: str) -> types.SimpleNamespace:
  return types.SimpleNamespace(num_block=args.num_block, num_feat=args.num_feat, num_grow_ch=args.num_grow_ch,
                               batch=batch, hr=hr, steps=args.steps, warmup=args.warmup, dtype=dtype,
                               pipeline_batches=0, peer=args.peer, peer_python=args.peer_python)


def _row(point: dict) -> str:
  ours, theirs = point["ours"], point.get("peer")
  cells = [f"{point['batch']}", f"{point['hr']}", point["dtype"], f"{ours['images_per_sec']:.3f}",
           f"{ours['step_time_s']['median']:.2f}", f"{ours['achieved_flops_per_s'] / 1e9:.1f}", f"{ours['fraction_of_peak']:.2f}",
           f"{ours['peak_rss_mb'] / 1024:.1f}"]
  if theirs:
    cells += [f"{theirs['images_per_sec']:.3f}", f"**{ours['images_per_sec'] / theirs['images_per_sec']:.2f}x**"]
  else:
    cells += ["-", "-"]
  cells.append(f"{ours['load_1min_before']:.1f}")
  return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num-block", type=int, default=6)
  parser.add_argument("--num-feat", type=int, default=64)
  parser.add_argument("--num-grow-ch", type=int, default=32)
  parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
  parser.add_argument("--crops", type=int, nargs="+", default=[64, 128, 192])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--threads", type=int, default=2, help="CPUs every benchmark process is pinned to")
  parser.add_argument("--no-peer", action="store_true", help="time restore_jax alone")
  parser.add_argument("--peer", default=peer_lib.DEFAULT_PEER, help="the PyTorch peer's bench.py")
  parser.add_argument("--peer-python", default=peer_lib.DEFAULT_PEER_PYTHON, help="a Python with torch for the peer")
  parser.add_argument("--output", required=True, help="JSON with every run")
  parser.add_argument("--markdown", help="also write the table here")
  args = parser.parse_args(argv)
  if not args.no_peer and not (os.path.isfile(args.peer) and os.path.isfile(args.peer_python)):
    parser.error(f"No peer at {args.peer} or no Python at {args.peer_python}: see benchmarks/peer.py's help, "
                 "or pass --no-peer.")
  cpus = sorted(os.sched_getaffinity(0))[:args.threads]

  shapes = [(b, 128, "float32") for b in args.batches]
  shapes += [(4, hr, "float32") for hr in args.crops if (4, hr, "float32") not in shapes]
  shapes.append((4, 128, "bfloat16"))
  points = []
  for batch, hr, dtype in shapes:
    point_args = _point_args(args, batch, hr, dtype)
    point = {"batch": batch, "hr": hr, "dtype": dtype, "ours": peer_lib.ours(point_args, cpus)}
    if not args.no_peer and dtype == "float32":  # The peer has no mixed-precision mode.
      point["peer"] = peer_lib.peer(point_args, cpus, share_g_forward=True)
    points.append(point)
    print(_row(point), flush=True)

  header = ("| batch | HR crop | compute | images/s | median step (s) | GFLOP/s | fraction of peak | peak RSS (GB) "
            "| peer images/s | ratio | load |\n| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  table = "\n".join([header] + [_row(p) for p in points])
  command = " ".join(["python", "benchmarks/scaling.py", *(argv if argv is not None else sys.argv[1:])])
  with open(args.output, "w") as f:
    json.dump({"command": command, "threads": args.threads, "points": points}, f, indent=2)
    f.write("\n")
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(f"Made by:\n\n```\n{command}\n```\n\n{table}\n")
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
