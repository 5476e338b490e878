"""Device mesh, shardings and the host-batch -> global-array step of data parallelism.

One `data` axis over every device of every process: the batch is split along it, the state is replicated. The
same code runs on one CPU, on fake CPU devices, on a GPU node and on a TPU pod.
"""

import os
from collections.abc import Mapping

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
  """Starts JAX's multi-process runtime when this process is one of several.

  The three arguments (main.py's --coordinator_address, --num_processes, --process_id, named after
  `jax.distributed.initialize`'s) are given all together or not at all; without them the environment decides:
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set by a launcher, or a TPU pod, a SLURM job or an
  Open MPI launch, where `jax.distributed.initialize()` discovers its peers by itself. A single process on its
  own initialises nothing.
  """
  if jax.distributed.is_initialized():
    return
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
  if any(v is not None for v in given.values()):
    missing = [f"--{k}" for k, v in given.items() if v is None]
    if missing:
      raise ValueError(f"--coordinator_address, --num_processes and --process_id go together; {', '.join(missing)} "
                       "missing. Give all three (every process the same address and count, its own id), or none "
                       "to let JAX find its peers (TPU pods, SLURM, Open MPI).")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id must be in [0, --num_processes), got {process_id} of {num_processes}.")
    kwargs = given
  elif "JAX_COORDINATOR_ADDRESS" in os.environ:
    kwargs = dict(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                  num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                  process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE")):
    kwargs = {}
  else:
    return
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":  # CPU-only multi-process runs (tests) need gloo collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  if jax.process_count() > 1:
    tag_log_lines_with_process()
  logging.info("Process %d of %d, %d local / %d global devices.", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def tag_log_lines_with_process() -> None:
  """Prefixes every absl log line with "[process i/N]", so interleaved logs of a pod say who wrote what."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top

  tag = f"[process {jax.process_index()}/{jax.process_count()}] "

  class _Tag(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
      if not str(record.msg).startswith(tag):
        record.msg = tag + str(record.msg)
      return True

  logging.get_absl_handler().addFilter(_Tag())


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
  """Split along the batch axis, which comes after `leading_axes` unsplit ones (e.g. the critic iterations)."""
  return NamedSharding(mesh, P(*([None] * leading_axes), DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(
        f"batch_size={global_batch} must be divisible by the number of devices ({n}); "
        f"set --config.batch_size to a multiple of {n}."
    )


def to_global_batch(local: Mapping[str, np.ndarray], mesh: Mesh, leading_axes: int = 0) -> dict[str, jax.Array]:
  """Turns this process's slice of the global batch into arrays sharded over the whole mesh."""
  sharding = batch_sharded(mesh, leading_axes)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
