"""Test set-up: 8 fake CPU devices, so the data-parallel code paths run on any machine; one compilation cache."""

import os

# Must happen before jax is imported anywhere in the test session.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The same programs (the tiny recipe's init and step) are compiled by several test modules and by the training
# processes they start: one persistent XLA cache for the session (tests/cli.py) compiles each of them once.
from cli import COMPILATION_CACHE  # noqa: E402

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", COMPILATION_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
