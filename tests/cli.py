"""Running the real training command line from tests: one place for the command and its environment."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train_command(workdir: Path, *extra: str, config: str = "configs/sr_wgangp.py:tiny") -> list[str]:
  return [sys.executable, "-m", "restore_jax.main", "--config", config, "--workdir", str(workdir), *extra]


def cli_env(local_devices: int, **extra: str) -> dict[str, str]:
  """This environment on the CPU with `local_devices` fake devices, plus `extra` variables."""
  return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}", **extra)
