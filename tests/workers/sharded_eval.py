"""One process of a sharded evaluation (tests/test_sharded_eval.py starts two): scores a folder with the identity
baseline, NIQE and a stand-in dataset-level metric, and writes the report as JSON."""

import json
import sys

import jax
import numpy as np

from restore_jax import baselines, evaluate, perceptual, task as task_lib


class MeanColourFID:
  """A dataset-level metric whose features are each image's mean colour and spread: FID without Inception."""

  def __init__(self):
    self.rows = {"restored": [], "clean": []}

  def add(self, restored, clean):
    for name, image in (("restored", restored), ("clean", clean)):
      self.rows[name].append(np.concatenate([image.mean(axis=(0, 1)), image.std(axis=(0, 1))]).astype(np.float64))

  def features(self):
    return tuple(np.array(self.rows[name]).reshape(-1, 6) for name in ("restored", "clean"))

  def result(self):
    from restore_jax.perceptual import fid  # pylint: disable=g-import-not-at-top

    restored, clean = self.features()
    return fid.frechet_distance(*fid.feature_statistics(restored), *fid.feature_statistics(clean))


def main(folder: str, output: str, coordinator: str, count: int, index: int) -> None:
  if count > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=count, process_id=index)
  spec = perceptual.METRICS["fid"]
  perceptual.METRICS["fid"] = perceptual.MetricSpec("fid", False, "dataset", MeanColourFID, spec.input_range, "")
  config = {"degradation": {"name": "gaussian_noise", "sigma": 0.05}, "task": {"scale": 1}, "data": {}}
  import ml_collections  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(config)
  pairs = evaluate.load_pairs(f"folder:{folder}", config, seed=3)
  report = evaluate.score(baselines.make_baseline("median", task_lib.Task()), pairs, crop_border=0,
                          metrics_to_report=("psnr", "ssim", "niqe", "fid"))
  if jax.process_index() == 0:
    with open(output, "w") as f:
      json.dump(report, f)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
