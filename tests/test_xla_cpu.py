"""restore_jax chooses XLA's own CPU convolutions over YNNPACK's, unless the user's XLA_FLAGS say otherwise."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import signal

from restore_jax import xla_cpu

# Compiles a 3x3 convolution (32 to 16 channels: large enough for YNNPACK to take it) in a fresh process, prints whether XLA made it a YNN fusion and its result, which the
# test checks against scipy. `import restore_jax` or not is the first line.
_PROBE = """
{import_line}
import json, os
import jax, jax.numpy as jnp, numpy as np
from jax import lax
x = (np.arange(1 * 12 * 13 * 32) % 17).astype(np.float32).reshape(1, 12, 13, 32) / 17
w = np.linspace(-1, 1, 3 * 3 * 32 * 16, dtype=np.float32).reshape(3, 3, 32, 16)
conv = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = conv.lower(x, w).compile().as_text()
print(json.dumps(dict(ynn="ynn_fusion" in hlo, flags=os.environ.get("XLA_FLAGS", ""),
                      y=np.asarray(conv(x, w))[0].tolist())))
"""


def _probe(import_restore_jax: bool, xla_flags: str | None = None) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
  env["JAX_PLATFORMS"] = "cpu"
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  code = _PROBE.format(import_line="import restore_jax" if import_restore_jax else "")
  done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def _scipy_conv() -> np.ndarray:
  x = (np.arange(1 * 12 * 13 * 32) % 17).astype(np.float64).reshape(1, 12, 13, 32) / 17
  w = np.linspace(-1, 1, 3 * 3 * 32 * 16, dtype=np.float32).astype(np.float64).reshape(3, 3, 32, 16)
  return np.stack([sum(signal.correlate2d(x[0, :, :, c], w[:, :, c, o], mode="same") for c in range(32))
                   for o in range(16)], axis=-1)


def test_importing_restore_jax_turns_ynn_fusions_off_and_the_convolution_is_unchanged():
  plain = _probe(import_restore_jax=False)
  ours = _probe(import_restore_jax=True)
  # Without restore_jax, this jaxlib makes the convolution a YNNPACK fusion; after importing it, XLA's own.
  assert plain["ynn"] and not ours["ynn"]
  assert ours["flags"] == "--xla_cpu_experimental_ynn_fusion_type="
  np.testing.assert_allclose(ours["y"], _scipy_conv(), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(plain["y"], _scipy_conv(), rtol=1e-4, atol=1e-4)


def test_the_users_own_flags_are_kept():
  kept = _probe(import_restore_jax=True, xla_flags="--xla_force_host_platform_device_count=2")
  assert kept["flags"] == "--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type="
  chosen = "--xla_cpu_experimental_ynn_fusion_type=dot"
  env = {"XLA_FLAGS": chosen}
  assert not xla_cpu.disable_ynn_fusions(env, jaxlib_version="0.10.2")
  assert env == {"XLA_FLAGS": chosen}


@pytest.mark.parametrize("version", ["0.9.1", "0.11.0", ""])
def test_other_jaxlib_versions_are_left_alone(version):
  # XLA aborts the process on a flag it does not know, so the flag is only added where it was measured.
  env = {}
  assert not xla_cpu.disable_ynn_fusions(env, jaxlib_version=version)
  assert env == {}
  assert xla_cpu.disable_ynn_fusions(env, jaxlib_version="0.10.2")
  assert env == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
