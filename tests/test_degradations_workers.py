"""Determinism across processes: a degradation built from config in a fresh worker process (spawned, as grain
workers are) gives the same bits as in the test's own process, for the same (config, target, seed).

This module stays light (numpy and restore_jax.degradations only) because the spawned workers import it.
"""

import multiprocessing

import numpy as np
import pytest

from restore_jax.degradations import default_config, make_degradation

CONFIGS = {
    "realistic": default_config("realistic"),
    "damage": default_config("damage", fill="noise"),
    "pixel_shuffle": {"name": "pixel_shuffle", "preset": "high"},
    "chain": {"name": "chain", "order": "shuffle", "steps": ("blur", "noise", "jpeg", "haze"),
              "blur": {"name": "mixed_blur"}, "noise": {"name": "poisson_noise", "gray_prob": 0.5, "prob": 0.7},
              "jpeg": {"name": "jpeg"}, "haze": {"name": "haze", "depth": "ramp", "prob": 0.5}},
    "blurs": {"name": "one_of", "steps": ("motion", "resize", "aniso"), "motion": {"name": "motion_blur"},
              "resize": {"name": "resize_blur"}, "aniso": {"name": "gaussian_blur", "anisotropic_prob": 1.0}},
}
SEEDS = (0, 1, 2, 3)


def _target(seed: int) -> np.ndarray:
  rng = np.random.default_rng(1000 + seed)
  smooth = np.cumsum(np.cumsum(rng.normal(size=(64, 64, 3)), 0), 1)
  return ((smooth - smooth.min()) / np.ptp(smooth)).astype(np.float32)


def degrade_all(name: str) -> list[dict[str, bytes]]:
  """Runs in a worker: builds the degradation from its config there and degrades each seed's target."""
  degrade = make_degradation(CONFIGS[name])
  results = []
  for seed in SEEDS:
    out = degrade(_target(seed), np.random.default_rng([7, seed]))
    results.append({key: value.tobytes() + str(value.shape).encode() for key, value in out.items()})
  return results


@pytest.fixture(scope="module")
def worker_results() -> dict[str, list[dict[str, bytes]]]:
  context = multiprocessing.get_context("spawn")
  with context.Pool(2) as pool:
    return dict(zip(CONFIGS, pool.map(degrade_all, list(CONFIGS))))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_bits_in_worker_processes(name, worker_results):
  assert worker_results[name] == degrade_all(name)
  assert len({result["input"] for result in worker_results[name]}) == len(SEEDS)  # Seeds differ.
