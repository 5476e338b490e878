"""The training loop: mesh, data, state, resume, compiled step, periodic logging, evaluation and checkpoints.

`train_and_evaluate(config, workdir)` reads top to bottom like the loop it is; the helpers above it are small
pure pieces it composes. A run that stops on purpose (preemption, too many non-finite steps, too much bad data)
saves a checkpoint first and raises `StopTraining`, whose exit code main.py returns.
"""

import functools
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from restore_jax import checkpoint, data, evaluate, inference, losses, models, parallel, plugins, preemption
from restore_jax import task as task_lib
from restore_jax.data import pipeline, sources
from restore_jax.state import GANState, create_gan_state, parameter_count
from restore_jax.step import make_train_step

# Host-side counters that travel with each batch (see restore_jax.data.pipeline).
SKIP_KEYS = ("skipped",) + tuple(f"skipped_{reason}" for reason in pipeline.SKIP_REASONS)
MODEL_KEYS = ("input", "target", "mask")  # What the step sees of a batch (mask only where the task has one).
COUNTER_KEYS = ("nonfinite_steps", "consecutive_nonfinite")  # Step metrics that count; logged as their last value.

# Exit codes of a run that stopped on purpose (sysexits.h names), so a scheduler can tell them from a crash.
EXIT_BAD_DATA = 65  # EX_DATAERR: more than data.max_skip_fraction of the records were unusable.
EXIT_NONFINITE = 70  # EX_SOFTWARE: max_consecutive_nonfinite steps in a row had NaN/Inf losses or gradients.


class StopTraining(Exception):
  """The run stopped on purpose after saving a checkpoint; `exit_code` says why."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


def image_grid(inputs: np.ndarray, restored: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Rows of [input | restored | target], float in [0, 1], NHWC with N = number of rows.

  The input is nearest-upscaled to the target's size (so its pixels show) and gray is repeated on three channels.
  """
  scale = target.shape[1] // inputs.shape[1]
  inputs = np.repeat(np.repeat(inputs, scale, axis=1), scale, axis=2)
  channels = target.shape[-1]
  row = [task_lib.to_rgb(np.asarray(x, np.float32), channels) for x in (inputs, restored, target)]
  return np.clip(np.concatenate(row, axis=2), 0.0, 1.0)


def initialise_generator_from(config: ml_collections.ConfigDict, state: GANState) -> GANState:
  """`generator.init_from = "DIR[:STEP]"`: the generator (raw and EMA) starts from another run's weights.

  ESRGAN starts its GAN phase from its PSNR-oriented model, and colorization pre-trains its generator with L1
  before the adversarial phase; this is how a recipe chains such runs. The other run's EMA weights are used
  unless generator.init_from_ema is False. The optimizer starts afresh.
  """
  spec = str(config.generator.get("init_from") or "")
  if not spec:
    return state
  workdir, _ = inference.parse_run_spec(spec)
  loaded = inference.load_init_from(config.generator)
  if inference.variable_shapes(state.generator.variables) != inference.variable_shapes(loaded.variables):
    raise ValueError(
        f"generator.init_from={spec!r}: that run's generator ({loaded.config.generator.to_dict()}) does not have "
        f"this recipe's shapes ({config.generator.to_dict()}); the generator settings must match.")
  variables = jax.device_put(loaded.variables, jax.tree.map(lambda x: x.sharding, state.generator.variables))
  logging.info("Generator initialised from step %d of %s (%s weights).", loaded.step, workdir,
               "EMA" if config.generator.get("init_from_ema", True) else "raw")
  generator = state.generator.replace(params=variables["params"], batch_stats=variables["batch_stats"])
  return state.replace(generator=generator, ema_params=jax.tree.map(jnp.copy, variables["params"]),
                       ema_batch_stats=jax.tree.map(jnp.copy, variables["batch_stats"]))


def mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
  """Window means over the finite values (a skipped non-finite step shows in "nonfinite", not as NaN curves);
  running counters report their last value."""
  stacked = jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *history))
  scalars = {}
  for name, values in stacked.items():
    values = np.asarray(values, np.float64)
    if name in COUNTER_KEYS:
      scalars[name] = float(values[-1])
    else:
      finite = values[np.isfinite(values)]
      scalars[name] = float(np.mean(finite)) if finite.size else float("nan")
  return scalars


def skip_counts_text(skips: dict[str, int]) -> str:
  """Per-reason skip counts for messages: "decode 3, small 1, ..."."""
  return ", ".join(f"{k.removeprefix('skipped_')} {v}" for k, v in skips.items() if k != "skipped")


def write_config(config: ml_collections.ConfigDict, workdir: epath.Path,
                 sample_files: dict[str, str] | None = None) -> None:
  """DIR/config.json: the config, and the sample photos' names and hashes when the run reads "samples"."""
  if jax.process_index() == 0:
    record = config.to_dict()
    if sample_files:
      record[checkpoint.SAMPLE_FILES_KEY] = sample_files
    (workdir / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANState:
  """Trains `config` in `workdir`, resuming from the newest good checkpoint there. Returns the final state.

  SIGTERM/SIGINT are watched from the start: during start-up the run stops before its first step (nothing new to
  save), later after the step in flight, with a checkpoint; either way StopTraining(EXIT_PREEMPTED).
  """
  watcher = preemption.PreemptionWatcher()
  try:
    return _train_and_evaluate(config, workdir, watcher)
  finally:
    watcher.close()


def _stop_if_preempted_while_starting(watcher: preemption.PreemptionWatcher, start_step: int) -> None:
  if watcher.stop_requested():
    since = f"the checkpoint of step {start_step}" if start_step else "the start (there is no checkpoint yet)"
    raise StopTraining(
        f"Stopped by {watcher.signal_name or 'a signal on another process'} while starting up, before step "
        f"{start_step + 1}: nothing was trained since {since}, so nothing is lost. Run the same command to "
        "continue.", preemption.EXIT_PREEMPTED)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        watcher: preemption.PreemptionWatcher) -> GANState:
  plugins.import_for(config)  # The recipe's own degradations, networks and loss terms, before anything is built.
  task = task_lib.from_config(config)
  evaluate.tiling_from_config(config)  # A bad eval.tile stops the run now, not at its first evaluation.
  workdir = checkpoint.absolute(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  sample_files = sources.sample_files(config)  # What "samples" holds here and now: it depends on the packages.
  checkpoint.check_config_compatible(workdir, config, sample_files=sample_files)  # Before config.json is rewritten.
  write_config(config, workdir, sample_files)

  # ---------------------------------------------------------------- Logging
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  writer.write_hparams(_flatten(config.to_dict()))

  # ---------------------------------------------------------------- Mesh
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  replicated = parallel.replicated(mesh)
  logging.info("Mesh %s over %d devices (%s), %d processes.", dict(mesh.shape), mesh.devices.size,
               jax.devices()[0].platform, jax.process_count())

  # ---------------------------------------------------------------- Model & losses
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  # Fixed networks the loss terms need (VGG19 for the perceptual term), looked up before training starts so a
  # missing weights file stops the run at once.
  _, frozen = losses.load_frozen(losses.make_terms(config.loss), config.loss)
  frozen = jax.device_put(frozen, replicated)
  n_critic = int(config.optim.n_critic)

  # ---------------------------------------------------------------- Input pipeline
  train_iter = data.make_train_iterator(
      config, process_index=jax.process_index(), process_count=jax.process_count()
  )
  eval_pairs = load_eval_pairs(config)

  # ---------------------------------------------------------------- State & checkpoint
  init = jax.jit(functools.partial(create_gan_state, config, generator, discriminator), out_shardings=replicated)
  state = init(jax.random.key(config.seed))
  logging.info("Generator: %s parameters; discriminator: %s parameters.",
               f"{parameter_count(state.generator.params):,}", f"{parameter_count(state.discriminator.params):,}")
  manager = checkpoint.make_manager(workdir / "checkpoints", keep=config.keep_checkpoints)
  state, start_step = checkpoint.restore_latest(manager, state, train_iter)
  if start_step == 0:
    state = initialise_generator_from(config, state)
  best_manager = None
  if eval_pairs and config.eval.best_metric:
    best_manager = checkpoint.make_best_manager(workdir / "best")

  # ---------------------------------------------------------------- Update step
  train_step = jit_train_step(config, generator, discriminator, mesh)
  count_skips = jax.jit(lambda skips: jax.tree.map(jnp.sum, skips), out_shardings=replicated)
  apply_generator = inference.make_apply(generator)  # Image grids and evaluation: one jitted, clipped apply.

  # ---------------------------------------------------------------- Train loop
  report_progress = periodic_actions.ReportProgress(num_train_steps=config.total_steps, writer=writer)
  hooks = [report_progress]
  history: list[dict[str, jax.Array]] = []
  skip_history: list[dict[str, jax.Array]] = []
  skips = {k: 0 for k in SKIP_KEYS}
  samples_read = 0  # Since this start, like the skip counts.
  previous_metrics = None
  preview = None
  window_start = None
  poison_steps = {int(s) for s in config.debug.poison_steps}
  saved_step = start_step
  if start_step >= config.total_steps:
    logging.info("Nothing to do: the checkpoint is at step %d of %d.", start_step, config.total_steps)
  try:
    with metric_writers.ensure_flushes(writer):
      _stop_if_preempted_while_starting(watcher, start_step)  # A signal while restoring.
      for step in range(start_step + 1, config.total_steps + 1):
        is_last = step == config.total_steps
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          # One batch per critic update, stacked on a leading axis; the generator update uses the last.
          local = jax.tree.map(lambda *xs: np.stack(xs), *[next(train_iter) for _ in range(n_critic)])
          if step in poison_steps:  # Test hook: a batch of NaNs.
            local = dict(local, input=np.full_like(local["input"], np.nan))
          batch = parallel.to_global_batch({k: local[k] for k in MODEL_KEYS if k in local}, mesh, leading_axes=1)
          if step == start_step + 1:
            train_step = compile_step(train_step, state, batch, frozen)
            _stop_if_preempted_while_starting(watcher, start_step)  # A signal while compiling.
          state, step_metrics = train_step(state, batch, frozen)
          skips_local = {k: local[k].reshape(-1) for k in SKIP_KEYS}
          skip_history.append(count_skips(parallel.to_global_batch(skips_local, mesh)))
        history.append(step_metrics)
        if preview is None:
          n = min(config.num_grid_images, local["input"].shape[1])
          preview = {k: local[k][-1, :n] for k in MODEL_KEYS if k in local}
        for hook in hooks:
          hook(step)

        # Non-finite guard: read the previous step's counter, one step behind so the host never waits on it.
        stop = None
        if previous_metrics is not None:
          consecutive = int(previous_metrics["consecutive_nonfinite"])
          if consecutive >= config.max_consecutive_nonfinite:
            stop = StopTraining(
                f"{consecutive} consecutive steps up to step {step - 1} had NaN or Inf losses or gradients; their "
                "updates were skipped, so the saved parameters are the last good ones. Lower the learning rates, "
                "set optim.grad_clip_norm, or check the data, then run the same command to resume.",
                EXIT_NONFINITE)
        previous_metrics = step_metrics

        if step % config.log_every == 0 or is_last or stop is not None:
          scalars = mean_metrics(history)  # Blocks until the window's steps are done: time it after this.
          now = time.perf_counter()
          if window_start is not None:
            scalars["perf/images_per_sec"] = config.batch_size * len(history) / (now - window_start)
          window_start = now  # The first window holds the compile: it gets no rate.
          samples_read += config.batch_size * len(history)
          for counts in jax.device_get(skip_history):
            for k in SKIP_KEYS:
              skips[k] += int(counts[k])
          history, skip_history = [], []
          scalars.update({f"data/{k}": v for k, v in skips.items()})
          skip_fraction = skips["skipped"] / (skips["skipped"] + samples_read)
          scalars["data/skip_fraction"] = skip_fraction
          writer.write_scalars(step, scalars)
          if skips["skipped"]:
            logging.info("Records skipped so far: %s (%.1f%% of reads).", skip_counts_text(skips),
                         100 * skip_fraction)
          if stop is None and skip_fraction > config.data.max_skip_fraction:
            stop = StopTraining(
                f"{100 * skip_fraction:.1f}% of the records read by step {step} were unusable ("
                + skip_counts_text(skips)
                + f"), more than data.max_skip_fraction = {config.data.max_skip_fraction}. The warnings above name "
                "the files; fix or remove them, or raise data.max_skip_fraction.", EXIT_BAD_DATA)
        if step % config.eval_every == 0 or is_last:
          with report_progress.timed("image_grid"):
            x = task_lib.generator_input(preview["input"], preview.get("mask"), task)
            restored = np.asarray(jax.device_get(apply_generator(state.generator.variables, x)))
            writer.write_images(step, {"input_output_target": image_grid(preview["input"], restored,
                                                                          preview["target"])})
          if eval_pairs:
            with report_progress.timed("eval"):
              report = run_eval(config, apply_generator, state, eval_pairs, writer, step)
            if best_manager is not None and config.eval.best_metric in report["mean"]:
              if checkpoint.save_best(best_manager, step, state, report["mean"], config.eval.best_metric,
                                      higher_is_better=evaluate.higher_is_better(config.eval.best_metric)):
                logging.info("New best %s = %.4f at step %d, saved in %s.", config.eval.best_metric,
                             report["mean"][config.eval.best_metric], step, workdir / "best")
        if stop is None and watcher.should_stop(step):
          stop = StopTraining(
              f"Stopped by {watcher.signal_name} after step {step}; the checkpoint is saved. Run the same command "
              "to continue.", preemption.EXIT_PREEMPTED)
        if step % config.checkpoint_every == 0 or is_last or stop is not None:
          with report_progress.timed("checkpoint"):
            checkpoint.save(manager, step, state, train_iter)
          saved_step = step
        if stop is not None:
          raise stop
  finally:
    manager.wait_until_finished()  # Never leave a save half-written, whatever stopped the loop.
    manager.close()
    if best_manager is not None:
      best_manager.wait_until_finished()
      best_manager.close()
    logging.info("Newest checkpoint: step %d in %s.", saved_step, workdir / "checkpoints")
  return state


def load_eval_pairs(config: ml_collections.ConfigDict) -> list[evaluate.Pair]:
  """The evaluation images (eval.data, or the records held out of data.source), degraded once; [] when none."""
  source = sources.eval_source(config)
  if source is None:
    logging.info("No periodic evaluation: set eval.data (e.g. folder:PATH) or eval.holdout > 0.")
    return []
  families = evaluate.check_metrics(tuple(config.eval.get("metrics", evaluate.DEFAULT_METRICS)))
  best = config.eval.best_metric
  if best and evaluate.metric_family(best) not in families:
    raise ValueError(f"eval.best_metric={best!r} is not among the metrics eval.metrics={families} report; add "
                     f"its family to eval.metrics or choose another (or '' to keep no best checkpoint).")
  pairs = evaluate.load_pairs(source, config, seed=config.eval.seed, max_images=config.eval.max_images)
  logging.info("Periodic evaluation on %d whole images every %d steps.", len(pairs), config.eval_every)
  return pairs


def run_eval(config, apply_generator, state: GANState, pairs, writer, step: int) -> dict:
  """Scores the (EMA) generator on whole images with evaluate.score; logs means and a few restored images.

  Images go through the generator in tiles of eval.tile input pixels (0 = whole), as restore and the evaluate
  command do, so large validation images cannot run the device out of memory.
  """
  variables = jax.device_get(state.ema_variables if config.eval.use_ema else state.generator.variables)
  tile, tile_overlap = evaluate.tiling_from_config(config)  # Device memory bounded by a tile, as in restore.
  restore_fn = evaluate.model_restore_fn(apply_generator, variables, task_lib.from_config(config), tile=tile,
                                         tile_overlap=tile_overlap)
  shown = {}  # The first few restorations this process made, reused for the image grid.

  grid_pairs = {id(pair) for pair in pairs[:config.num_grid_images]}

  def remember(pair: evaluate.Pair, restored: np.ndarray) -> None:
    if id(pair) in grid_pairs:
      shown[id(pair)] = restored

  report = evaluate.score(restore_fn, pairs, crop_border=task_lib.from_config(config).crop_border,
                          metrics_to_report=tuple(config.eval.get("metrics", evaluate.DEFAULT_METRICS)),
                          skip_unavailable=True, on_restored=remember)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in report["mean"].items()})
  images = {}
  for pair in pairs[:config.num_grid_images]:
    restored = shown.get(id(pair))
    if restored is None:
      restored = restore_fn(pair.degraded, pair.mask)
    images[f"eval/{pair.name}"] = image_grid(pair.degraded[None], restored[None], pair.clean[None])
  writer.write_images(step, images)
  return report


def jit_train_step(config: ml_collections.ConfigDict, generator, discriminator, mesh, mode: str = "step"):
  """The step, jitted as training runs it: state replicated and donated (updated in place), the n_critic stacked
  batches split over the mesh's data axis. restore_jax.bench times this very function."""
  replicated = parallel.replicated(mesh)
  return jax.jit(
      make_train_step(config, generator, discriminator, mode=mode),
      in_shardings=(replicated, parallel.batch_sharded(mesh, leading_axes=1), replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,),
  )


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


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out
