"""Running the real training command line from tests: one place for the command and its environment."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The variable that names the session's compilation cache to pytest-xdist's workers, which inherit it.
_CACHE_VARIABLE = "RESTORE_JAX_TEST_XLA_CACHE"


def _session_cache() -> str:
  """One XLA compilation cache for every training process of a test session: runs of the same recipe compile the
  same programs, and loading them from the cache saves ~20 s of CPU per run. A hit gives the very same executable.

  The process that makes it (pytest, or xdist's controller) deletes it at exit; xdist's workers use the same one.
  """
  if os.environ.get(_CACHE_VARIABLE):
    return os.environ[_CACHE_VARIABLE]
  path = tempfile.mkdtemp(prefix="restore_jax_xla_cache_")
  os.environ[_CACHE_VARIABLE] = path
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


COMPILATION_CACHE = _session_cache()


def train_command(workdir: Path, *extra: str, config: str = "configs/sr_wgangp.py:tiny") -> list[str]:
  return [sys.executable, "-m", "restore_jax.main", "--config", config, "--workdir", str(workdir), *extra]


def cli_env(local_devices: int, **extra: str) -> dict[str, str]:
  """This environment on the CPU with `local_devices` fake devices, plus `extra` variables."""
  return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}",
              JAX_COMPILATION_CACHE_DIR=COMPILATION_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **extra)


def train(workdir: Path, *extra: str, config: str = "configs/sr_wgangp.py:tiny", check: bool = True,
          cwd: Path = REPO, devices: int = 2, **env_overrides: str) -> subprocess.CompletedProcess:
  """Runs the training command line to its end; with `check`, fails the test with its stderr if it failed."""
  proc = subprocess.run(train_command(workdir, *extra, config=config), cwd=cwd, env=cli_env(devices, **env_overrides),
                        capture_output=True, text=True, timeout=900)
  if check:
    assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def read_events(workdir: Path) -> tuple[dict[str, list[tuple[int, float]]], set[str]]:
  """Scalars (tag -> [(step, value)]) and image tags from the TensorBoard event files, read with TensorFlow."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  # Slow: only where events are read.

  scalars, images = {}, set()
  for path in workdir.rglob("events.out.tfevents*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        kind = value.metadata.plugin_data.plugin_name
        if kind == "images":
          images.add(value.tag)
        elif kind == "scalars" or value.HasField("simple_value"):
          number = value.simple_value if value.HasField("simple_value") else float(tf.make_ndarray(value.tensor))
          scalars.setdefault(value.tag, []).append((event.step, number))
  return {tag: sorted(points) for tag, points in scalars.items()}, images


def read_state(workdir: Path, step: int) -> dict:
  """A checkpoint's GANState as host arrays, read with orbax alone (no restore_jax code)."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  tree = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
  as_numbers = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
  return jax.tree.map(lambda x: np.asarray(as_numbers(x)), tree)


def assert_trees_equal(a: dict, b: dict) -> None:
  """Same paths, bit-identical leaves."""
  import jax  # pylint: disable=g-import-not-at-top

  flat_a, flat_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    assert np.array_equal(x, y), f"{jax.tree_util.keystr(path)} differs"
