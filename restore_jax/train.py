"""The training loop: mesh, data, state, resume, compiled step, periodic logging, image grids and checkpoints.

`train_and_evaluate(config, workdir)` reads top to bottom like the loop it is; the helpers above it are small
pure pieces it composes.
"""

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from restore_jax import checkpoint, data, models, parallel
from restore_jax.data import pipeline
from restore_jax.models import vgg19, vgg19_weights
from restore_jax.state import GANState, create_gan_state, parameter_count
from restore_jax.step import make_train_step

# Host-side counters that travel with each batch (see restore_jax.data.pipeline).
SKIP_KEYS = ("skipped",) + tuple(f"skipped_{reason}" for reason in pipeline.SKIP_REASONS)
MODEL_KEYS = ("lr", "hr")


def make_feature_extractor(config: ml_collections.ConfigDict) -> tuple[Any, dict]:
  """VGG19 features and their weights for the perceptual loss, or (None, {}) when the term is off.

  Looks for the weights before any training starts so a missing file stops the run at once, with a message
  that says where to put it.
  """
  pc = config.loss.perceptual
  if pc.weight <= 0:
    logging.info("Perceptual (VGG19) loss is off for this config (loss.perceptual.weight = 0).")
    return None, {}
  params = vgg19_weights.load_vgg19_params(pc.weights)
  module = vgg19.VGG19Features(layers=tuple(pc.layers.keys()), before_activation=pc.before_activation)
  return module, {"vgg19": params}


def image_grid(degraded: np.ndarray, restored: np.ndarray, clean: np.ndarray) -> np.ndarray:
  """Rows of [degraded (nearest-upscaled) | restored | clean], float in [0, 1], NHWC with N = number of rows."""
  scale = clean.shape[1] // degraded.shape[1]
  degraded = np.repeat(np.repeat(degraded, scale, axis=1), scale, axis=2)
  return np.clip(np.concatenate([degraded, restored, clean], axis=2), 0.0, 1.0)


def mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
  stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *history))
  return {k: float(np.mean(v)) for k, v in stacked.items()}


def write_config(config: ml_collections.ConfigDict, workdir: epath.Path) -> None:
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANState:
  """Trains `config` in `workdir`, resuming from the newest checkpoint there. Returns the final state."""
  workdir = _absolute(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  write_config(config, workdir)

  # ---------------------------------------------------------------- Logging
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  writer.write_hparams(_flatten(config.to_dict()))

  # ---------------------------------------------------------------- Mesh
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  logging.info("Mesh %s over %d devices (%s), %d processes.", dict(mesh.shape), mesh.devices.size,
               jax.devices()[0].platform, jax.process_count())

  # ---------------------------------------------------------------- Model & losses
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  feature_extractor, frozen = make_feature_extractor(config)
  frozen = jax.device_put(frozen, replicated)

  # ---------------------------------------------------------------- Input pipeline
  train_iter = data.make_train_iterator(
      config, process_index=jax.process_index(), process_count=jax.process_count()
  )

  # ---------------------------------------------------------------- State & checkpoint
  init = jax.jit(functools.partial(create_gan_state, config, generator, discriminator), out_shardings=replicated)
  state = init(jax.random.key(config.seed))
  logging.info("Generator: %s parameters; discriminator: %s parameters.",
               f"{parameter_count(state.generator.params):,}", f"{parameter_count(state.discriminator.params):,}")
  manager = checkpoint.make_manager(workdir / "checkpoints", keep=config.keep_checkpoints)
  state, start_step = checkpoint.restore_latest(manager, state, train_iter)

  # ---------------------------------------------------------------- Update step
  train_step = jax.jit(
      make_train_step(config, generator, discriminator, feature_extractor),
      in_shardings=(replicated, sharded, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,),
  )
  generate = jax.jit(lambda params, x: generator.apply({"params": params}, x))

  # ---------------------------------------------------------------- Train loop
  report_progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer)
  hooks = [report_progress]
  history: list[dict[str, jax.Array]] = []
  skips = {k: 0 for k in SKIP_KEYS}
  preview = None
  window_start = None
  if start_step >= config.total_steps:
    logging.info("Nothing to do: the checkpoint is at step %d of %d.", start_step, config.total_steps)
  with metric_writers.ensure_flushes(writer):
    for step in range(start_step + 1, config.total_steps + 1):
      is_last = step == config.total_steps
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        local = next(train_iter)
        batch = parallel.to_global_batch({k: local[k] for k in MODEL_KEYS}, mesh)
        if step == start_step + 1:
          train_step = compile_step(train_step, state, batch, frozen)
        state, step_metrics = train_step(state, batch, frozen)
      history.append(step_metrics)
      for k in SKIP_KEYS:
        skips[k] += int(np.sum(local[k]))
      if preview is None:
        n = min(config.num_grid_images, local["lr"].shape[0])
        preview = (local["lr"][:n], local["hr"][:n])
      for hook in hooks:
        hook(step)

      if step % config.log_every == 0 or is_last:
        scalars = mean_metrics(history)  # Blocks until the window's steps are done: time it after this.
        now = time.perf_counter()
        if window_start is not None:
          scalars["perf/images_per_sec"] = config.batch_size * len(history) / (now - window_start)
        window_start = now  # The first window holds the compile: it gets no rate.
        scalars.update({f"data/{k}": v for k, v in skips.items()})
        writer.write_scalars(step, scalars)
        history = []
      if step % config.eval_every == 0 or is_last:
        with report_progress.timed("image_grid"):
          restored = np.asarray(jax.device_get(generate(state.generator.params, preview[0])))
          writer.write_images(step, {"lr_sr_hr": image_grid(preview[0], restored, preview[1])})
      if step % config.checkpoint_every == 0 or is_last:
        with report_progress.timed("checkpoint"):
          checkpoint.save(manager, step, state, train_iter)
  manager.wait_until_finished()
  manager.close()
  return state


def compile_step(train_step, state, batch, frozen):
  """Compiles the step ahead of time, logs its FLOPs and memory (as MaxText does), and returns the executable."""
  t0 = time.perf_counter()
  compiled = train_step.lower(state, batch, frozen).compile()
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, list):
    cost = cost[0] if cost else {}
  logging.info("Compiled the train step in %.1f s; %.3g FLOPs per step.", time.perf_counter() - t0,
               cost.get("flops", float("nan")))
  try:
    mem = compiled.memory_analysis()
    logging.info("Step memory: arguments %.1f MiB, temporaries %.1f MiB.",
                 mem.argument_size_in_bytes / 2**20, mem.temp_size_in_bytes / 2**20)
  except Exception:  # Not every backend reports memory.
    pass
  return compiled


def _absolute(path: str) -> epath.Path:
  """Local paths made absolute (orbax refuses relative ones); URLs such as gs://bucket/run pass through."""
  return epath.Path(path if "://" in str(path) else os.path.abspath(path))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out
