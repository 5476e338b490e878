"""Evaluation split over processes: two processes on 127.0.0.1 each score every other image, and the report
(per-image scores, means, and a dataset-level metric over the whole set) equals one process's, with an image
count that does not divide evenly."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

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
