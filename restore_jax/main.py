"""Trains a restoration GAN: `python -m restore_jax.main --config configs/sr_wgangp.py[:VARIANT] --workdir DIR`."""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from restore_jax import checkpoint, parallel, train
from restore_jax.models import vgg19_weights

EXIT_CONFIG = 78  # EX_CONFIG: the workdir cannot be resumed (another configuration, or no readable checkpoint).

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and config.json.")
config_flags.DEFINE_config_file("config", None, "Recipe file, e.g. configs/sr_wgangp.py:demo.", lock_config=True)
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for a run of several processes (with "
                    "--num_processes and --process_id). Not needed on TPU pods, under SLURM or Open MPI.")
flags.DEFINE_integer("num_processes", None, "How many processes take part (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1 (with --coordinator_address).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    parallel.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  logging.info("JAX process %d / %d, devices: %s", jax.process_index(), jax.process_count(), jax.devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except train.StopTraining as e:  # Stopped on purpose, checkpoint saved: the exit code says why.
    logging.warning("%s", e)
    sys.exit(e.exit_code)
  # Set-up problems, not bugs: a message and no traceback.
  except vgg19_weights.VGG19WeightsNotFound as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")
  except (checkpoint.IncompatibleConfig, checkpoint.NoGoodCheckpoint) as e:
    logging.error("%s", e)
    sys.exit(EXIT_CONFIG)


if __name__ == "__main__":
  app.run(main)
