"""XLA:CPU options chosen for restore_jax's networks, set before JAX starts its CPU backend.

jaxlib 0.10 hands convolutions and matrix products on the CPU to YNNPACK ("ynn fusions") by default. On a 2-core
x86 (AMD EPYC, AVX2) YNNPACK ran a 3x3, 64-channel convolution at 20-30 GFLOP/s where XLA's own Eigen kernels ran
the same convolution at 39-44 GFLOP/s, next to oneDNN's 38-45 under PyTorch on the same cores; RRDB 6x64's WGAN-GP
training step went from 0.26 to 0.36 images/s. On a 2-core AMD EPYC with AVX-512 the gap is smaller, but the step
was still faster without YNN fusions, about 1.06x (benchmarks/README.md has the commands and numbers). So unless the
user's XLA_FLAGS already say which YNN fusions to use, restore_jax asks for none. XLA reads XLA_FLAGS once, when the
first backend starts: the flag only takes effect if restore_jax is imported before anything runs on a device.

The flag is only set for the jaxlib series it was measured on: XLA aborts on a flag it does not know.
"""

import importlib.metadata
import os
from collections.abc import MutableMapping

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_MEASURED_JAXLIB = ("0.10.",)  # jaxlib releases known to have the flag (and YNNPACK on by default).


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ""


def disable_ynn_fusions(environ: MutableMapping[str, str] = os.environ, jaxlib_version: str | None = None) -> bool:
  """Adds `--xla_cpu_experimental_ynn_fusion_type=` (no YNN fusions) to XLA_FLAGS; returns whether it did.

  Leaves XLA_FLAGS alone when it already sets that flag (the user's choice wins) or when jaxlib is not a version
  the flag was measured on.
  """
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  current = environ.get("XLA_FLAGS", "")
  if YNN_FUSION_FLAG in current or not version.startswith(_MEASURED_JAXLIB):
    return False
  environ["XLA_FLAGS"] = f"{current} {YNN_FUSION_FLAG}=".strip()
  return True
