"""Samples per second of every degradation family on one CPU thread, at 128 and 256 px crops.

Produced benchmarks/results/degradations.json with:

  python benchmarks/degradations.py --output benchmarks/results/degradations.json

One process, one thread (BLAS, OpenMP and scipy.fft pinned to one before numpy loads): what one input-pipeline
worker gets. Each configuration degrades `--samples` crops of real photographs (scikit-image's samples, so JPEG
and noise see natural content), each with its own seed, as the pipeline does; a measurement is the best of
`--repeats` passes, because the machine is shared and the best pass is the least disturbed one. Both the
wall-clock rate and the rate per second of the process's CPU time are kept: on a busy shared machine the
second is what one core delivers when it gets to run. The first
pass of every configuration is a warm-up (caches of resize matrices, tilings). `--profile` also times the
stages of the `realistic` chain; `--dm-pix` times dm-pix's jitted Gaussian blur and gamma per sample, the JAX
alternative for the input pipeline; `--shuffle-psnr` reports the PSNR of pixel-shuffled crops at each preset; `--calibrate-filter` times the two
ways filtering.correlate filters (the cost model behind its choice).
"""

import argparse
import json
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS"):
  os.environ[_var] = "1"

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)  # Run as a script from a checkout: import this checkout's restore_jax.

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402

from restore_jax.degradations import default_config, make_degradation  # noqa: E402

SIZES = (128, 256)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")

# (label, config): every family at its defaults, plus the presets and compositions recipes use.
CONFIGS = (
    ("bicubic x4", dict(name="bicubic", scale=4)),
    ("resize x4 bicubic", default_config("resize")),
    ("pixel_shuffle low", dict(name="pixel_shuffle", preset="low")),
    ("pixel_shuffle high", dict(name="pixel_shuffle", preset="high")),
    ("gaussian_blur fixed sigma 2", dict(name="gaussian_blur", sigma=2.0)),
    ("gaussian_blur random sigma", default_config("gaussian_blur")),
    ("gaussian_blur anisotropic", dict(name="gaussian_blur", anisotropic_prob=1.0, kernel_size=(7, 21))),
    ("generalized_gaussian_blur", default_config("generalized_gaussian_blur")),
    ("plateau_blur", default_config("plateau_blur")),
    ("sinc_blur", default_config("sinc_blur")),
    ("motion_blur", default_config("motion_blur")),
    ("resize_blur", default_config("resize_blur")),
    ("mixed_blur", default_config("mixed_blur")),
    ("gaussian_noise", default_config("gaussian_noise")),
    ("poisson_noise", default_config("poisson_noise")),
    ("haze uniform", default_config("haze")),
    ("haze ramp", dict(name="haze", depth="ramp")),
    ("exposure low_light", dict(name="exposure", preset="low_light")),
    ("jpeg", default_config("jpeg")),
    ("damage", default_config("damage")),
    ("grayscale", default_config("grayscale")),
    ("chain blur+noise+jpeg", dict(name="chain", order="shuffle", steps=("blur", "noise", "jpeg"),
                                   blur=dict(name="gaussian_blur", prob=0.8), noise=dict(name="gaussian_noise"),
                                   jpeg=dict(name="jpeg", prob=0.5))),
    ("one_of deblur mix", dict(name="one_of", steps=("fixed", "random", "resize"),
                               fixed=dict(name="gaussian_blur", sigma=2.0), random=dict(name="gaussian_blur"),
                               resize=dict(name="resize_blur"))),
    ("realistic x4", default_config("realistic")),
)


def crops(size: int, count: int) -> list[np.ndarray]:
  """`count` crops of the sample photos, at spread-out positions."""
  photos = [getattr(skimage.data, name)() for name in PHOTOS]
  rng = np.random.default_rng(0)
  out = []
  for i in range(count):
    photo = photos[i % len(photos)]
    top = int(rng.integers(0, photo.shape[0] - size + 1))
    left = int(rng.integers(0, photo.shape[1] - size + 1))
    out.append(np.ascontiguousarray(photo[top:top + size, left:left + size, :3], np.float32) / 255.0)
  return out


def measure(config: dict, images: list[np.ndarray], repeats: int) -> tuple[float, float]:
  """Best samples/s over `repeats` timed passes (after one warm-up pass): by wall clock, and by the process's
  CPU time (what one core delivers when the shared machine lets it run)."""
  degrade = make_degradation(config)
  best_wall = best_cpu = 0.0
  for attempt in range(repeats + 1):
    wall, cpu = time.perf_counter(), time.process_time()
    for seed, image in enumerate(images):
      degrade(image, np.random.default_rng([seed, attempt]))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if attempt:
      best_wall, best_cpu = max(best_wall, len(images) / wall), max(best_cpu, len(images) / cpu)
  return best_wall, best_cpu


def profile_realistic(images: list[np.ndarray], repeats: int) -> dict[str, float]:
  """CPU milliseconds per sample in each stage of `realistic` (wrapping the functions it calls)."""
  from restore_jax.degradations import realistic  # pylint: disable=import-outside-toplevel

  totals: dict[str, float] = {}

  def timed(name, fn):
    def wrapper(*args, **kwargs):
      start = time.process_time()
      try:
        return fn(*args, **kwargs)
      finally:
        totals[name] = totals.get(name, 0.0) + time.process_time() - start
    return wrapper

  patches = {"filtering.correlate": (realistic.filtering, "correlate"), "resize": (realistic, "_resize"),
             "jpeg": (realistic, "compress"), "gaussian noise": (realistic, "add_gaussian"),
             "poisson noise": (realistic, "add_levels_poisson"), "kernel sampling": (realistic.MixedKernels, "sample")}
  originals = {name: getattr(owner, attr) for name, (owner, attr) in patches.items()}
  for name, (owner, attr) in patches.items():
    setattr(owner, attr, timed(name, originals[name]))
  try:
    degrade = make_degradation(default_config("realistic"))
    start = time.process_time()
    for _ in range(repeats):
      for seed, image in enumerate(images):
        degrade(image, np.random.default_rng(seed))
    total = time.process_time() - start
  finally:
    for name, (owner, attr) in patches.items():
      setattr(owner, attr, originals[name])
  count = repeats * len(images)
  result = {name: 1e3 * value / count for name, value in sorted(totals.items(), key=lambda kv: -kv[1])}
  result["total"] = 1e3 * total / count
  return result


def dm_pix_per_sample(image: np.ndarray, repeats: int) -> dict[str, float]:
  """Milliseconds for dm-pix's jitted ops on one crop (numpy in, numpy out), first call and steady state."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import dm_pix  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel

  blur = jax.jit(dm_pix.gaussian_blur, static_argnums=(2,))
  gamma = jax.jit(lambda x, g, e: dm_pix.adjust_gamma(x, g, gain=e))
  ops = {f"dm_pix.gaussian_blur k={k}": (lambda k=k: blur(image, 1.5, k)) for k in (7, 21)}
  ops["dm_pix.adjust_gamma"] = lambda: gamma(image, 2.0, 0.5)
  result = {}
  for name, op in ops.items():
    start = time.perf_counter()
    np.asarray(op())
    result[f"{name} first call (compiles)"] = 1e3 * (time.perf_counter() - start)
    best = float("inf")
    for _ in range(repeats):
      start = time.perf_counter()
      for _ in range(10):
        np.asarray(op())
      best = min(best, (time.perf_counter() - start) / 10)
    result[f"{name} per call"] = 1e3 * best
  return {name: round(value, 2) for name, value in result.items()}


def calibrate_filter(rounds: int) -> dict[str, float]:
  """CPU milliseconds of filtering.correlate's two ways on a 256 x 256 RGB image: separable passes for rank
  1, 2, 4 and the FFT, for 7, 13 and 21 taps (interleaved, best of `rounds`)."""
  from restore_jax.degradations import filtering  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  image = rng.random((256, 256, 3), dtype=np.float32)
  best: dict[str, float] = {}
  for _ in range(rounds):
    for taps in (7, 13, 21):
      kernel = rng.random((taps, taps))
      cases = {f"fft k={taps}": lambda k=kernel: filtering.correlate_fft(image, k / k.sum())}
      for rank in (1, 2, 4):
        factors = [(rng.random(taps), rng.random(taps)) for _ in range(rank)]
        cases[f"passes k={taps} rank={rank}"] = lambda f=factors: filtering.correlate_separable(image, f)
      for name, op in cases.items():
        start = time.process_time()
        for _ in range(3):
          op()
        best[name] = min(best.get(name, float("inf")), 1e3 * (time.process_time() - start) / 3)
  return {name: round(value, 2) for name, value in sorted(best.items())}


def shuffle_psnr(images: list[np.ndarray]) -> dict[str, float]:
  """Mean PSNR (dB, RGB) of the pixel-shuffled crops against the clean ones, per preset."""
  result = {}
  for preset in ("low", "high"):
    degrade = make_degradation({"name": "pixel_shuffle", "preset": preset})
    values = []
    for seed, image in enumerate(images):
      error = np.mean((degrade(image, np.random.default_rng(seed))["input"] - image) ** 2)
      values.append(10 * np.log10(1.0 / error))
    result[preset] = round(float(np.mean(values)), 2)
  return result


def markdown_table(result: dict) -> str:
  """The results as the table of docs/degradations.md and benchmarks/degradations.md."""
  lines = ["| configuration | 128 px, CPU | 128 px, wall | 256 px, CPU | 256 px, wall |",
           "| --- | ---: | ---: | ---: | ---: |"]
  for row in result["results"]:
    lines.append(f"| {row['label']} | {row['samples_per_cpu_s_128']:.0f} | {row['samples_per_s_128']:.0f} | "
                 f"{row['samples_per_cpu_s_256']:.0f} | {row['samples_per_s_256']:.0f} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", help="Write the results as JSON here.")
  parser.add_argument("--samples", type=int, default=40, help="Crops per timed pass.")
  parser.add_argument("--repeats", type=int, default=5, help="Timed passes per configuration (best is kept).")
  parser.add_argument("--only", default="", help="Measure only configurations whose label contains this.")
  parser.add_argument("--profile", action="store_true", help="Also time the stages of realistic at 256 px.")
  parser.add_argument("--dm-pix", action="store_true", help="Also time dm-pix's jitted ops per 256 px sample.")
  parser.add_argument("--shuffle-psnr", action="store_true", help="Also report the PSNR of the shuffle presets.")
  parser.add_argument("--calibrate-filter", action="store_true", help="Also time the two filtering paths.")
  parser.add_argument("--table", help="Only print the markdown table of this results file.")
  args = parser.parse_args()
  if args.table:
    with open(args.table) as f:
      print(markdown_table(json.load(f)))
    return

  load_at_start = list(os.getloadavg())
  images = {size: crops(size, args.samples) for size in SIZES}
  rows = []
  print(f"{'configuration':32s} " + " ".join(f"{size:>4d}px wall/s  cpu/s" for size in SIZES), flush=True)
  for label, config in CONFIGS:
    if args.only and args.only not in label:
      continue
    rates = {size: measure(config, images[size], args.repeats) for size in SIZES}
    row = {"label": label, "config": config}
    for size, (wall, cpu) in rates.items():
      row[f"samples_per_s_{size}"] = round(wall, 1)
      row[f"samples_per_cpu_s_{size}"] = round(cpu, 1)
    rows.append(row)
    print(f"{label:32s} " + " ".join(f"{wall:11.1f} {cpu:6.1f}" for wall, cpu in rates.values()), flush=True)

  result = {
      "command": "python benchmarks/degradations.py " + " ".join(sys.argv[1:]),
      "threads": 1, "samples_per_pass": args.samples, "repeats": args.repeats,
      "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                  "numpy": np.__version__, "load_average_at_start": load_at_start,
                  "load_average_at_end": list(os.getloadavg())},
      "results": rows,
  }
  if args.profile:
    result["realistic_profile_cpu_ms_256"] = profile_realistic(images[256], args.repeats)
    print(json.dumps(result["realistic_profile_cpu_ms_256"], indent=1))
  if args.dm_pix:
    result["dm_pix_ms_256"] = dm_pix_per_sample(images[256][0], args.repeats)
    print(json.dumps(result["dm_pix_ms_256"], indent=1))
  if args.calibrate_filter:
    result["filter_cpu_ms_256"] = calibrate_filter(3 * args.repeats)
    print(json.dumps(result["filter_cpu_ms_256"], indent=1))
  if args.shuffle_psnr:
    result["pixel_shuffle_psnr_db"] = {f"{size}px": shuffle_psnr(images[size]) for size in SIZES}
    print(json.dumps(result["pixel_shuffle_psnr_db"], indent=1))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(result, f, indent=1)
      f.write("\n")


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


if __name__ == "__main__":
  main()
