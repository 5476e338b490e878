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


def maybe_initialize_distributed() -> None:
  """Starts JAX's multi-process runtime when this process is one of several.

  On TPU pods and SLURM/Kubernetes GPU clusters `jax.distributed.initialize()` discovers its peers by itself; on a
  plain machine the launcher sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
  """
  if jax.distributed.is_initialized():
    return
  explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
  managed = any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"))
  if not (explicit or managed):
    return
  kwargs = {}
  if explicit:
    kwargs = dict(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":  # CPU-only multi-process runs (tests) need gloo collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  logging.info("Process %d of %d, %d local / %d global devices.", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


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
