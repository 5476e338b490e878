"""Training throughput of a recipe, measured on the machine it runs on.

    python -m restore_jax.bench --config configs/sr_wgangp.py:bench [--steps N] [--output bench.json]
        [--mode step|generator|critic] [--dtype float32|bfloat16] [--config.KEY=VALUE ...]

Compiles the real training step (restore_jax.train.jit_train_step: the same function, shardings and donation as
training) at the recipe's shape, runs `--warmup` steps, then times `--steps` steps, waiting for the devices after
each one. Prints a table and writes JSON with:

  images_per_sec            batch_size / median step time (what training logs as perf/images_per_sec)
  step_time_s               median, min, max, interquartile range and every timed step
  compile_s                 lowering and compiling the step
  compilations_while_timing functions JAX compiled during the timed steps (0: nothing is recompiled)
  flops_per_step            XLA's cost analysis of the compiled step (all devices)
  generator_forward_flops_per_image   the same for the generator's forward pass on one training input
  achieved_flops_per_s      flops_per_step / median step time
  peak_flops_per_s          the best of several float32 matrix products (--peak_size squared) under XLA on the
                            same devices in the same run: what this machine does at best right now
  fraction_of_peak          achieved / peak
  pipeline_images_per_sec   the recipe's own input pipeline alone (decode, crop, augment, degrade), no step
  peak_rss_mb               the process's peak resident memory
  devices, shape, versions, XLA_FLAGS and the load average before and after, to judge a shared machine's noise

`--mode generator` times the generator's update alone, `--mode critic` the n_critic critic updates alone.
`--dtype bfloat16` sets config.compute_dtype (mixed precision; parameters and optimizer stay float32).
"""

import contextlib
import functools
import json
import os
import platform
import resource
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from restore_jax import data, losses, models, parallel, plugins, train
from restore_jax.state import create_gan_state, input_shapes, parameter_count
from restore_jax.step import COMPUTE_DTYPES, MODES

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Recipe file, e.g. configs/sr_wgangp.py:bench.", lock_config=True)
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_string("output", None, "Write the results as JSON here.")
flags.DEFINE_enum("mode", "step", MODES, "What to time: the full step, the generator's or the critic's update.")
flags.DEFINE_enum("dtype", None, COMPUTE_DTYPES, "Compute dtype (config.compute_dtype); default: the config's.")
flags.DEFINE_integer("pipeline_batches", 8, "Batches timed from the input pipeline alone (0: skip).")
flags.DEFINE_integer("peak_size", 2048, "Side of the square float32 matrices of the peak measurement.")
flags.mark_flags_as_required(["config"])

# Recorded by JAX each time a jitted function is lowered to a program (so before the persistent compilation cache
# is consulted: a cache hit still counts), with the function's name.
LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


@contextlib.contextmanager
def record_lowerings():
  """Yields a list that receives the name of every function JAX lowers (compiles) inside the block, in order."""
  lowered: list[str] = []

  def listener(event: str, duration: float, **kwargs) -> None:
    del duration
    if event == LOWERING_EVENT:
      lowered.append(str(kwargs.get("fun_name", "?")))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield lowered
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _time(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def peak_flops_per_s(size: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of the fastest of `repeats` size x size float32 matrix products under XLA, all devices at once.

  The same devices and the same compiler as the step, in the same run: on a shared machine this is the peak the
  step could have had at that moment, not the hardware's datasheet figure.
  """
  devices = jax.devices()
  mesh = parallel.make_mesh(devices)
  sharding = parallel.batch_sharded(mesh)
  # One independent product per device (a leading axis split over the mesh): no communication.
  a = jax.device_put(jnp.ones((len(devices), size, size), jnp.float32) / size, sharding)
  product = jax.jit(lambda x: jnp.einsum("bij,bjk->bik", x, x), out_shardings=sharding)
  jax.block_until_ready(product(a))
  best = min(_time(product, a) for _ in range(repeats))
  return 2.0 * size**3 * len(devices) / best


def pipeline_images_per_sec(config: ml_collections.ConfigDict, batches: int) -> dict[str, float]:
  """Images/s of the recipe's training input pipeline alone, after its first batch (start-up) is out."""
  iterator = data.make_train_iterator(config)
  start = time.perf_counter()
  next(iterator)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  elapsed = time.perf_counter() - start
  return {"pipeline_images_per_sec": batches * int(config.batch_size) / elapsed, "pipeline_first_batch_s": first,
          "pipeline_workers": int(config.data.get("num_workers", 0))}


def _shape(config: ml_collections.ConfigDict) -> dict[str, Any]:
  shape = {"batch_size": int(config.batch_size), "hr_size": int(config.data.crop_size),
           "n_critic": int(config.optim.n_critic), "generator": str(config.generator.name),
           "discriminator": str(config.discriminator.name)}
  for key in ("num_block", "num_feat", "num_grow_ch"):
    if key in config.generator:
      shape[key] = int(config.generator[key])
  if "num_feat" in config.discriminator:
    shape["discriminator_num_feat"] = int(config.discriminator.num_feat)
  return shape


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled program, from XLA's cost analysis (per device for a sharded program)."""
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, list):
    cost = cost[0] if cost else {}
  return float(cost.get("flops", float("nan")))


def generator_forward_flops(config: ml_collections.ConfigDict) -> float:
  """XLA's FLOP count of the generator's forward pass on one training input (batch 1, float32)."""
  generator = models.make_generator(config.generator)
  variables = jax.eval_shape(lambda: generator.init(jax.random.key(0), jnp.zeros(input_shapes(config)[0])))
  x = jax.ShapeDtypeStruct(input_shapes(config)[0], jnp.float32)
  return compiled_flops(jax.jit(generator.apply).lower(variables, x).compile())


def _real_batches(config: ml_collections.ConfigDict, mesh) -> dict[str, jax.Array]:
  """n_critic batches from the recipe's own pipeline, stacked and on the devices, as train.py feeds the step."""
  iterator = data.make_train_iterator(config)
  n_critic = int(config.optim.n_critic)
  local = jax.tree.map(lambda *xs: np.stack(xs), *[next(iterator) for _ in range(n_critic)])
  return parallel.to_global_batch({k: local[k] for k in train.MODEL_KEYS if k in local}, mesh, leading_axes=1)


def run(config: ml_collections.ConfigDict, *, steps: int, warmup: int, mode: str = "step",
        pipeline_batches: int = 8, peak_size: int = 2048) -> dict[str, Any]:
  """Measures one recipe; returns the JSON-ready results."""
  if steps < 1 or warmup < 0:
    raise ValueError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}.")
  plugins.import_for(config)
  load_before = os.getloadavg()
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  replicated = parallel.replicated(mesh)
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  _, frozen = losses.load_frozen(losses.make_terms(config.loss), config.loss)
  frozen = jax.device_put(frozen, replicated)
  init = jax.jit(functools.partial(create_gan_state, config, generator, discriminator), out_shardings=replicated)
  state = init(jax.random.key(config.seed))
  batches = _real_batches(config, mesh)

  step_fn = train.jit_train_step(config, generator, discriminator, mesh, mode=mode)
  start = time.perf_counter()
  compiled = train.compile_step(step_fn, state, batches, frozen)
  compile_s = time.perf_counter() - start
  flops = compiled_flops(compiled) * jax.device_count()

  def one_step(state):
    state, metrics = compiled(state, batches, frozen)
    jax.block_until_ready((state, metrics))
    return state, metrics

  for _ in range(warmup):
    state, metrics = one_step(state)
  times = []
  with record_lowerings() as lowered:
    for _ in range(steps):
      start = time.perf_counter()
      state, metrics = one_step(state)
      times.append(time.perf_counter() - start)
  metrics = jax.device_get(metrics)
  if not all(np.isfinite(np.asarray(v)).all() for v in metrics.values()):
    raise FloatingPointError(f"The benchmarked step produced non-finite metrics: {metrics}")

  median = statistics.median(times)
  q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (median, median, median)
  peak = peak_flops_per_s(peak_size)
  result = {
      "recipe": str(config.recipe), "variant": str(config.variant), "mode": mode,
      "compute_dtype": str(config.get("compute_dtype", "float32")),
      "shape": _shape(config),
      "images_per_sec": int(config.batch_size) / median,
      "step_time_s": {"median": median, "min": min(times), "max": max(times), "iqr": q3 - q1, "all": times},
      "compile_s": compile_s,
      "compilations_while_timing": len(lowered),
      "flops_per_step": flops,
      "achieved_flops_per_s": flops / median,
      "peak_flops_per_s": peak,
      "fraction_of_peak": flops / median / peak,
      "generator_forward_flops_per_image": generator_forward_flops(config),
      "params_generator": parameter_count(state.generator.params),
      "params_discriminator": parameter_count(state.discriminator.params),
  }
  if pipeline_batches > 0:
    result.update(pipeline_images_per_sec(config, pipeline_batches))
  result.update({
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
      "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
      "platform": jax.devices()[0].platform, "cpu_count": os.cpu_count(),
      "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax_version": jax.__version__,
      "python": platform.python_version(), "machine": platform.machine(),
      "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": steps, "warmup": warmup,
  })
  return result


def format_table(result: dict[str, Any]) -> str:
  """The numbers people read, one per line."""
  t = result["step_time_s"]
  rows = [
      ("recipe", f"{result['recipe']}:{result['variant']}  mode={result['mode']}  dtype={result['compute_dtype']}"),
      ("shape", ", ".join(f"{k}={v}" for k, v in result["shape"].items())),
      ("device", f"{result['device_count']} x {result['device_kind']} ({result['platform']}, "
                 f"{result['cpu_count']} cpus)"),
      ("images_per_sec", f"{result['images_per_sec']:.3f}"),
      ("step_time_s", f"median {t['median']:.3f}  min {t['min']:.3f}  max {t['max']:.3f}  iqr {t['iqr']:.3f}"),
      ("compile_s", f"{result['compile_s']:.1f}"),
      ("flops_per_step", f"{result['flops_per_step'] / 1e9:.1f} GFLOP"),
      ("achieved_flops_per_s", f"{result['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s"),
      ("peak_flops_per_s", f"{result['peak_flops_per_s'] / 1e9:.1f} GFLOP/s (float32 matmul, this run)"),
      ("fraction_of_peak", f"{result['fraction_of_peak']:.3f}"),
  ]
  if "pipeline_images_per_sec" in result:
    rows.append(("pipeline_images_per_sec", f"{result['pipeline_images_per_sec']:.1f} "
                 f"({result['pipeline_workers']} worker processes)"))
  rows += [("peak_rss_mb", f"{result['peak_rss_mb']:.0f}"),
           ("load_average", f"{result['load_average_before'][0]:.1f} before, "
                            f"{result['load_average_after'][0]:.1f} after")]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  if FLAGS.dtype is not None:
    config.compute_dtype = FLAGS.dtype
  result = run(config, steps=FLAGS.steps, warmup=FLAGS.warmup, mode=FLAGS.mode,
               pipeline_batches=FLAGS.pipeline_batches, peak_size=FLAGS.peak_size)
  print(format_table(result))
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
    logging.info("Wrote %s.", FLAGS.output)


if __name__ == "__main__":
  app.run(main)
