"""Running the real training command line from tests: one place for the command and its environment."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# One XLA compilation cache for every training process of a test session: runs of the same recipe compile the
# same programs, and loading them from the cache saves ~20 s of CPU per run. A hit gives the very same executable.
COMPILATION_CACHE = tempfile.mkdtemp(prefix="restore_jax_xla_cache_")
atexit.register(shutil.rmtree, COMPILATION_CACHE, ignore_errors=True)


def train_command(workdir: Path, *extra: str, config: str = "configs/sr_wgangp.py:tiny") -> list[str]:
  return [sys.executable, "-m", "restore_jax.main", "--config", config, "--workdir", str(workdir), *extra]


def cli_env(local_devices: int, **extra: str) -> dict[str, str]:
  """This environment on the CPU with `local_devices` fake devices, plus `extra` variables."""
  return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}",
              JAX_COMPILATION_CACHE_DIR=COMPILATION_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **extra)
