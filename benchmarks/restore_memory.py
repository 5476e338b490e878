"""Peak memory of tiled restoration against image size and tile size: it must grow with the image's input and
output arrays only, not with anything else of the image's size.

Produced benchmarks/results/restore_memory.json with:

  python benchmarks/restore_memory.py --output benchmarks/results/restore_memory.json

Each measurement runs in a fresh process: it compiles the network for one tile (ahead of time, without running
it), resets the kernel's peak-RSS mark (/proc/self/clear_refs), restores a synthetic image of the given size with
`restore_jax.tiling.restore_tiled` into a uint8 output (as the restore CLI does for 8-bit files) and reads the peak
(VmHWM) back. `extra_mb` is that peak over the RSS before the image existed; `arrays_mb` is what the input (float32)
and output (uint8) arrays take, `strip_mb` the float partial sums kept between tile rows. The rest of `extra_mb` is
per tile (the network's buffers, one weighted tile) plus, with glibc's default allocator, heap fragmentation; the
"mmap" rows take the allocator out (see ALLOCATOR_ENV). Models: "bicubic" (jax.image.resize, no parameters, so the
large sizes take seconds) and "rrdb_tiny" (the tiny recipe's RRDBNet, random weights). `tile = 0` is the untiled
baseline: the whole image through the network at once. Timings are of a shared 2-core CPU and only indicative.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)  # Run as a script from a checkout: import this checkout's restore_jax.
# (model, input side, tile, allocator): the grid the committed result was measured on.
GRID = (
    [("bicubic", size, tile, "default") for size in (256, 512, 1024, 2048) for tile in (64, 128, 256)]
    + [("bicubic", size, 0, "default") for size in (256, 512, 1024)]
    + [("bicubic", size, 128, "mmap") for size in (128, 1024, 2048)]
    + [("bicubic", size, 256, "mmap") for size in (256, 1024, 2048)]
    + [("rrdb_tiny", size, 128, "default") for size in (128, 1024)]
)
# glibc serves mid-sized blocks from its heap once a freed mmap raises its threshold, and returns heap pages to
# the system late: RSS then carries some fragmentation on top of the live arrays. A fixed threshold ("mmap": every
# block above 128 KiB mapped and unmapped on its own) takes the allocator out of the measurement, slower.
ALLOCATOR_ENV = {"default": {}, "mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"}}
SCALE = 4
OVERLAP = 16


def measure(model: str, size: int, tile: int, overlap: int, scale: int) -> dict:
  """Runs in the child process: one restoration, its timing and its memory."""
  import jax  # pylint: disable=g-import-not-at-top  # Imported in the child only.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from restore_jax import tiling  # pylint: disable=g-import-not-at-top

  apply_fn = _make_model(model, scale, jax, jnp)
  warm_side = tile if tile else size
  # Compile ahead of time, outside the measurement, without running: the run's own buffers are then measured.
  apply_fn.lower(np.zeros((1, warm_side, warm_side, 3), np.float32)).compile()
  hwm_reset = _reset_peak()
  baseline = _status_mb("VmRSS")
  image = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
  start = time.perf_counter()
  restored = tiling.restore_tiled(apply_fn, image, scale=scale, tile=tile, overlap=overlap, out_dtype=np.uint8)
  seconds = time.perf_counter() - start
  peak = _status_mb("VmHWM")
  assert restored.shape == (size * scale, size * scale, 3)
  out_side = size * scale
  starts = tiling.tile_starts(size, tile, overlap) if tile else [0]
  strip_rows = max((tile - (b - a) for a, b in zip(starts, starts[1:])), default=0) * scale  # Widest overlap.
  return dict(
      model=model, size=size, tile=tile, overlap=overlap if tile else 0, scale=scale,
      tile_shape=list(tiling.tile_shape(size, size, tile)) if tile else [size, size],
      input_mb=image.nbytes / 2**20, output_mb=restored.nbytes / 2**20,
      arrays_mb=(image.nbytes + restored.nbytes) / 2**20,
      strip_mb=2 * strip_rows * out_side * 3 * 4 / 2**20,
      baseline_rss_mb=baseline, peak_rss_mb=peak, extra_mb=peak - baseline, hwm_reset=hwm_reset,
      seconds=seconds, device=str(jax.devices()[0].platform),
  )


def run_child(model: str, size: int, tile: int, allocator: str = "default", overlap: int = OVERLAP,
              scale: int = SCALE) -> dict:
  """One measurement in a fresh Python process (so earlier ones leave no high-water mark behind)."""
  command = [sys.executable, os.path.abspath(__file__), "--child", "--model", model, "--size", str(size),
             "--tile", str(tile), "--overlap", str(overlap), "--scale", str(scale)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **ALLOCATOR_ENV[allocator])
  env.pop("XLA_FLAGS", None)  # One device, as the restore CLI uses.
  result = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=1200)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
  return dict(json.loads(result.stdout.strip().splitlines()[-1]), allocator=allocator)


def _make_model(model: str, scale: int, jax, jnp):
  if model == "bicubic":
    return jax.jit(lambda x: jnp.clip(jax.image.resize(x, (x.shape[0], x.shape[1] * scale, x.shape[2] * scale,
                                                               x.shape[3]), "bicubic"), 0.0, 1.0))
  if model == "rrdb_tiny":
    from restore_jax.models import RRDBNet  # pylint: disable=g-import-not-at-top

    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=scale)  # configs/sr_wgangp.py:tiny.
    params = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    return jax.jit(lambda x: jnp.clip(net.apply({"params": params}, x), 0.0, 1.0))
  raise ValueError(f"Unknown model {model!r}; use bicubic or rrdb_tiny.")


def _status_mb(key: str) -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(key + ":"):
        return int(line.split()[1]) / 1024
  raise RuntimeError(f"/proc/self/status has no {key}: this benchmark needs Linux.")


def _reset_peak() -> bool:
  """Resets VmHWM to the current RSS (Linux >= 4.0), so the peak measured is the restoration's own."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output", default="", help="Write the results here as JSON.")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--model", default="bicubic")
  parser.add_argument("--size", type=int, default=1024)
  parser.add_argument("--tile", type=int, default=128)
  parser.add_argument("--overlap", type=int, default=OVERLAP)
  parser.add_argument("--scale", type=int, default=SCALE)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.model, args.size, args.tile, args.overlap, args.scale)))
    return

  rows = []
  header = (f"{'model':>9} {'alloc':>7} {'input':>9} {'tile':>4} {'arrays MB':>9} {'strip MB':>8} {'extra MB':>8} "
            f"{'peak MB':>8} {'s':>6}")
  print(header)
  for model, size, tile, allocator in GRID:
    row = run_child(model, size, tile, allocator)
    rows.append(row)
    print(f"{model:>9} {allocator:>7} {size:>4}x{size:<4} {tile:>4} {row['arrays_mb']:9.1f} {row['strip_mb']:8.1f} "
          f"{row['extra_mb']:8.1f} {row['peak_rss_mb']:8.1f} {row['seconds']:6.1f}", flush=True)
  if args.output:
    report = dict(
        command="python benchmarks/restore_memory.py --output benchmarks/results/restore_memory.json",
        machine=dict(platform=platform.platform(), processor=platform.processor(), cpus=os.cpu_count(),
                     python=platform.python_version()),
        scale=SCALE, overlap=OVERLAP, rows=rows,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
      json.dump(report, f, indent=2)
    print(f"Wrote {args.output}")


if __name__ == "__main__":
  main()
