"""Checkpoint cost of the full-size super-resolution recipe: how long a save blocks the training loop, and what
loading the generator for inference costs (time, peak memory, bytes read).

Produced benchmarks/results/checkpoint_io.json with, from a checkout of each version ("before" = the commit
before fingerprinted digests and partial restores, "after" = this one; the script measures the restore_jax of
the checkout it sits in):

  python benchmarks/checkpoint_io.py --label after --output benchmarks/results/checkpoint_io.json
  cp benchmarks/checkpoint_io.py OLD_CHECKOUT/benchmarks/ && \\
    python OLD_CHECKOUT/benchmarks/checkpoint_io.py --label before --output $PWD/benchmarks/results/checkpoint_io.json

The state is configs/sr_wgangp.py with no variant (ESRGAN's RRDB generator, 16.7 M parameters, and the VGG
critic, each with Adam's two moments, plus the generator's EMA: 421 MiB), filled with random numbers (its
initialisers take minutes to compile on a CPU), on the default device. Each measurement runs in a fresh process:

- save: `checkpoint.save` called `--saves` times (each waited for before the next, outside the timing); its
  blocking time is what the training loop loses. The same state saved by orbax alone (the state and data
  iterator items, no digest) is the reference; the two kinds alternate, so both meet the same machine load. The first save of each kind is reported apart: it includes
  one-off costs (orbax's handler set-up; with fingerprints, compiling one small kernel per array shape).
- load: `inference.load_generator` (EMA weights) from the last save, with the peak RSS over the RSS before it
  (VmHWM reset through /proc/self/clear_refs) and the bytes tensorstore read from disk. The files were just
  written, so they come from the page cache: the times leave the disk out.

Timings are of a shared 2-core CPU unless the JSON's machine says otherwise: compare rows of one run only.
"""

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)  # Run as a script from a checkout: import this checkout's restore_jax.


def _full_config():
  from configs import sr_wgangp  # pylint: disable=g-import-not-at-top

  return sr_wgangp.get_config()


def _random_state(config):
  """A GANState of the recipe's structure, random numbers in every float array, placed on the default device."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from restore_jax import models  # pylint: disable=g-import-not-at-top
  from restore_jax.state import create_gan_state  # pylint: disable=g-import-not-at-top

  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  shapes = jax.eval_shape(functools.partial(create_gan_state, config, generator, discriminator), jax.random.key(0))
  rng = np.random.default_rng(0)

  def fill(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.key(0)
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.asarray(0.02 * rng.standard_normal(leaf.shape, np.float32))
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree.map(fill, shapes)


def measure_saves(workdir: str, saves: int) -> dict:
  """Runs in a child process: blocking times of restore_jax's save and of orbax's own, on one state."""
  import jax  # pylint: disable=g-import-not-at-top
  import grain  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  from restore_jax import checkpoint, data  # pylint: disable=g-import-not-at-top

  config = _full_config()
  state = _random_state(config)
  jax.block_until_ready(state)
  state_mib = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state) if hasattr(x, "size")
                  and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)) / 2**20
  iterator = data.make_train_iterator(config)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f, default=str)

  plain = ocp.CheckpointManager(
      checkpoint.absolute(os.path.join(workdir, "orbax_only")), item_names=("state", "data"),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=True))
  ours = checkpoint.make_manager(checkpoint.absolute(os.path.join(workdir, "checkpoints")), keep=1)
  kinds = {
      "orbax": (plain, lambda step: plain.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)), force=True)),
      "save": (ours, lambda step: checkpoint.save(ours, step, state, iterator)),
  }
  blocked = {kind: [] for kind in kinds}
  finished = {kind: [] for kind in kinds}
  for step in range(1, saves + 1):  # The two kinds alternate, so both see the same load on a shared machine.
    for kind, (manager, save) in kinds.items():
      start = time.perf_counter()
      save(step)
      blocked[kind].append(time.perf_counter() - start)
      manager.wait_until_finished()
      finished[kind].append(time.perf_counter() - start)
  plain.close()
  ours.close()
  plain_blocked, plain_finished, ours_blocked, ours_finished = (
      blocked["orbax"], finished["orbax"], blocked["save"], finished["save"])
  return dict(state_mib=state_mib, saves=saves, device=str(jax.devices()[0].platform),
              orbax_first_s=plain_blocked[0], orbax_blocking_s=statistics.median(plain_blocked[1:]),
              orbax_until_written_s=statistics.median(plain_finished[1:]),
              save_first_s=ours_blocked[0], save_blocking_s=statistics.median(ours_blocked[1:]),
              save_until_written_s=statistics.median(ours_finished[1:]),
              orbax_blocking_all_s=plain_blocked, save_blocking_all_s=ours_blocked)


def measure_load(workdir: str) -> dict:
  """Runs in a child process: one load_generator, its time, peak memory and bytes read."""
  import jax  # pylint: disable=g-import-not-at-top
  import tensorstore as ts  # pylint: disable=g-import-not-at-top

  from restore_jax import inference  # pylint: disable=g-import-not-at-top

  def bytes_read() -> int:
    found = ts.experimental_collect_matching_metrics("/tensorstore/kvstore/file/bytes_read")
    return sum(int(v["value"]) for m in found for v in m["values"])

  hwm_reset = _reset_peak()
  baseline = _status_mb("VmRSS")
  read_before = bytes_read()
  start = time.perf_counter()
  loaded = inference.load_generator(workdir)
  jax.block_until_ready(loaded.variables)
  seconds = time.perf_counter() - start
  peak = _status_mb("VmHWM")
  weights_mib = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(loaded.variables)) / 2**20
  return dict(load_s=seconds, load_extra_rss_mb=peak - baseline, load_peak_rss_mb=peak, baseline_rss_mb=baseline,
              load_read_mib=(bytes_read() - read_before) / 2**20, generator_mib=weights_mib, hwm_reset=hwm_reset,
              step=loaded.step)


def _child(kind: str, workdir: str, saves: int) -> dict:
  command = [sys.executable, os.path.abspath(__file__), "--child", kind, "--workdir", workdir,
             "--saves", str(saves)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("XLA_FLAGS", None)  # One device, as a training run on one accelerator and as inference use.
  result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=3000)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def _status_mb(key: str) -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(key + ":"):
        return int(line.split()[1]) / 1024
  raise RuntimeError(f"/proc/self/status has no {key}: this benchmark needs Linux.")


def _reset_peak() -> bool:
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _commit() -> str:
  try:
    return subprocess.run(["git", "-C", _REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--label", default="this checkout", help="Name of this row (e.g. before / after).")
  parser.add_argument("--output", default="", help="JSON file to add this row to (a row of the same label is "
                      "replaced).")
  parser.add_argument("--workdir", default="/tmp/restore_jax_checkpoint_io", help="Scratch directory (~1.3 GB).")
  parser.add_argument("--saves", type=int, default=7, help="Saves of each kind; the first is reported apart.")
  parser.add_argument("--loads", type=int, default=3, help="Loads, each in a fresh process.")
  parser.add_argument("--child", choices=("save", "load"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child == "save":
    print(json.dumps(measure_saves(args.workdir, args.saves)))
    return
  if args.child == "load":
    print(json.dumps(measure_load(args.workdir)))
    return

  workdir = os.path.join(args.workdir, args.label.replace(" ", "_"))
  row = dict(label=args.label, commit=_commit(), **_child("save", workdir, args.saves))
  loads = [_child("load", workdir, args.saves) for _ in range(args.loads)]
  for key in ("load_s", "load_extra_rss_mb", "load_read_mib"):
    row[key] = statistics.median(load[key] for load in loads)
  row.update(generator_mib=loads[0]["generator_mib"], hwm_reset=all(load["hwm_reset"] for load in loads),
             load_s_all=[load["load_s"] for load in loads])
  print(json.dumps(row, indent=2))
  if args.output:
    report = {"rows": []}
    if os.path.exists(args.output):
      with open(args.output) as f:
        report = json.load(f)
    report["rows"] = [r for r in report["rows"] if r["label"] != args.label] + [row]
    report.update(
        commands=[
            "python benchmarks/checkpoint_io.py --label after --output benchmarks/results/checkpoint_io.json",
            "cp benchmarks/checkpoint_io.py OLD_CHECKOUT/benchmarks/ && python OLD_CHECKOUT/benchmarks/"
            "checkpoint_io.py --label before --output $PWD/benchmarks/results/checkpoint_io.json"],
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                     python=platform.python_version()))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
      json.dump(report, f, indent=2)
    print(f"Wrote {args.output}")


if __name__ == "__main__":
  main()
