"""Evaluation split over processes and devices: two processes on 127.0.0.1 each score every other image, and the
report (per-image scores, means, and a dataset-level metric over the whole set) equals one process's, with an image
count that does not divide evenly; within a process, same-size images go through the generator together, one per
device."""

import json
import os
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import scipy.signal
import skimage.data
from PIL import Image

from restore_jax import evaluate, inference
from restore_jax import task as task_lib

from cli import REPO, cli_env

WORKER = str(REPO / "tests" / "workers" / "sharded_eval.py")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
  root = tmp_path_factory.mktemp("sharded")
  folder = root / "images"
  folder.mkdir()
  photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
  for k in range(5):  # 5 images over 2 processes.
    photo = photos[k % 3]
    Image.fromarray(photo[k * 20:k * 20 + 120 + 8 * k, :150]).save(folder / f"image_{k}.png")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = cli_env(1, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
  two = [subprocess.Popen([sys.executable, WORKER, str(folder), str(root / "two.json"), f"127.0.0.1:{port}", "2",
                           str(i)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
         for i in range(2)]
  one = subprocess.run([sys.executable, WORKER, str(folder), str(root / "one.json"), "", "1", "0"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
  outputs = [p.communicate(timeout=600)[0] for p in two]
  assert one.returncode == 0, one.stderr[-3000:]
  for p, out in zip(two, outputs):
    assert p.returncode == 0, out[-3000:]
  return json.loads((root / "one.json").read_text()), json.loads((root / "two.json").read_text())


def test_two_processes_report_what_one_process_reports(reports):
  one, two = reports
  assert [image["name"] for image in two["images"]] == [f"image_{k}.png" for k in range(5)]
  assert set(one["mean"]) == set(two["mean"]) == {"psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "niqe", "fid"}
  for a, b in zip(one["images"], two["images"]):
    for key in ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "niqe"):
      assert a[key] == pytest.approx(b[key], rel=1e-6), (a["name"], key)
  for key, value in one["mean"].items():
    assert two["mean"][key] == pytest.approx(value, rel=1e-6), key
  # No image dropped or counted twice: the means are those of the five per-image values.
  assert two["mean"]["psnr_y"] == pytest.approx(np.mean([image["psnr_y"] for image in two["images"]]), rel=1e-9)


class _Filter(nn.Module):
  """A 3x3 convolution with a bias: a generator whose output scipy can compute independently."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Conv(3, (3, 3), padding="SAME")(x)


def _scipy_filter(variables, image: np.ndarray) -> np.ndarray:
  """What _Filter gives, by scipy: cross-correlation with zero padding, summed over input channels, clipped."""
  kernel = np.asarray(variables["params"]["Conv_0"]["kernel"], np.float64)  # (3, 3, in, out)
  bias = np.asarray(variables["params"]["Conv_0"]["bias"], np.float64)
  out = np.stack([sum(scipy.signal.correlate2d(image[..., i], kernel[:, :, i, o], mode="same")
                      for i in range(image.shape[-1])) + bias[o] for o in range(kernel.shape[-1])], axis=-1)
  return np.clip(out, 0.0, 1.0)


def test_same_size_images_are_restored_together_one_per_device():
  """10 images of one size, 3 of another and one large tiled one on 8 devices: whole images go 8 then 2 at a time
  and 3 at a time, one per device, the tiled image's tiles spread over the devices; every restoration equals
  scipy's, and every score equals that of restoring one image at a time on one device."""
  assert jax.local_device_count() == 8
  module = _Filter()
  variables = module.init(jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
  rng = np.random.default_rng(0)
  sizes = [(24, 32)] * 10 + [(20, 20)] * 3 + [(64, 72)]
  pairs = [evaluate.Pair(f"image_{k}", rng.uniform(size=size + (3,)).astype(np.float32),
                         rng.uniform(size=size + (3,)).astype(np.float32)) for k, size in enumerate(sizes)]
  apply = inference.make_apply(module)
  calls = []

  def recording_apply(params, images):
    calls.append((images.shape[0], len(images.sharding.device_set), images.shape[1:3]))
    return apply(params, images)

  restored = {}
  spread = evaluate.ModelRestorer(recording_apply, variables, task_lib.Task(), tile=40, tile_overlap=8)
  report = evaluate.score(spread, pairs, crop_border=0,
                          on_restored=lambda pair, image: restored.__setitem__(pair.name, image))
  whole = [call for call in calls if call[2] != (40, 40)]
  assert whole == [(8, 8, (24, 32)), (2, 2, (24, 32)), (3, 3, (20, 20))]
  tiled = [call for call in calls if call[2] == (40, 40)]
  assert tiled == [(4, 4, (40, 40))]  # 2 x 2 tiles of 40 px over 64 x 72, one per device.
  for pair in pairs:
    np.testing.assert_allclose(restored[pair.name], _scipy_filter(variables, pair.degraded), atol=2e-5)
  one_device = evaluate.ModelRestorer(apply, variables, task_lib.Task(), tile=40, tile_overlap=8,
                                      devices=jax.local_devices()[:1])
  alone = evaluate.score(one_device, pairs, crop_border=0)
  for a, b in zip(report["images"], alone["images"]):
    assert a["name"] == b["name"]
    for key in evaluate.METRICS:
      assert a[key] == pytest.approx(b[key], abs=1e-4), (a["name"], key)
