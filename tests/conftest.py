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

# The modules that train through the command line, slowest first (pytest --durations on a 2-core CPU). pytest-xdist's
# `--dist loadfile` hands modules out in this order, so its workers start on the long ones and finish together.
SLOW_FIRST = ("test_multiprocess.py", "test_resume.py", "test_recipe_degrain.py", "test_recipe_esrgan.py",
              "test_recipe_pix2pix.py", "test_compile_count.py", "test_add_a_task.py", "test_train.py",
              "test_serve.py", "test_step.py", "test_bf16.py", "test_recipe_denoise.py", "test_recipe_deblur.py",
              "test_bench.py")


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # Stable: a module's order is kept.
