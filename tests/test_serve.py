"""The web page (restore_jax.serve): request handling, then the page itself driven in Debian's Chromium.

One tiny sr_wgangp run (2 steps, x4) is trained for the module. Sizes and formats are read back with Pillow;
the restored pixels are compared with the Flax module applied directly, without the server's padding.
"""

import json
import os
import re
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import cli
import numpy as np
import pytest
from PIL import Image

from restore_jax import inference
from restore_jax.serve_requests import BucketedApply, RequestError, Restorer, check_photo, load_models

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp("serve") / "run"
  cli.train(workdir, "--config.total_steps=2", devices=1)
  return workdir


@pytest.fixture(scope="module")
def not_a_run(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("not_a_run")


@pytest.fixture(scope="module")
def models(run_dir, not_a_run):
  return load_models([str(run_dir), str(not_a_run)])


@pytest.fixture(scope="module")
def restorer(models, tmp_path_factory) -> Restorer:
  return Restorer(models, tmp_path_factory.mktemp("served"))


def _photo(path: pathlib.Path, width: int, height: int, seed: int = 0) -> pathlib.Path:
  rng = np.random.default_rng(seed)
  levels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  Image.fromarray(levels).save(path)
  return path


def test_model_is_named_by_recipe_step_task_and_scale(models, run_dir):
  recorded = json.loads((run_dir / "config.json").read_text())
  steps = [int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
  expected = f"{recorded['recipe']} step {max(steps)} ({recorded['degradation']['name']}, x{recorded['task']['scale']})"
  assert models[0].name == expected == "sr_wgangp step 2 (bicubic, x4)"
  assert models[0].error is None


def test_a_run_that_cannot_be_loaded_is_listed_with_its_reason(models, restorer, not_a_run, tmp_path):
  assert models[1].generator is None and str(not_a_run) in models[1].name
  with pytest.raises(RequestError, match="cannot be loaded.*config.json does not exist"):
    restorer(models[1].name, _photo(tmp_path / "a.png", 20, 16))
  with pytest.raises(RequestError, match="Unknown model"):
    restorer("no such model", _photo(tmp_path / "a.png", 20, 16))


def test_a_file_that_is_not_an_image_is_refused(models, restorer, tmp_path):
  fake = tmp_path / "letter.png"
  fake.write_text("Dear server, this is not a photo.")
  with pytest.raises(RequestError, match="letter.png is not an image"):
    restorer(models[0].name, fake)
  with pytest.raises(RequestError, match="Upload a photo"):
    restorer(models[0].name, None)


def test_pixel_limit_is_checked_from_the_header(tmp_path):
  photo = _photo(tmp_path / "p.png", 40, 30)  # 1200 pixels.
  assert check_photo(photo, max_pixels=1200) == (40, 30)
  with pytest.raises(RequestError, match=r"40x30 = 0.0 megapixels.*--max-pixels"):
    check_photo(photo, max_pixels=1199)


@pytest.mark.parametrize("suffix, pil_format", [(".png", "PNG"), (".jpg", "JPEG")])
def test_output_is_scaled_in_the_input_format_and_matches_the_network(models, restorer, tmp_path, suffix,
                                                                     pil_format):
  photo = _photo(tmp_path / f"photo{suffix}", 45, 38)
  reported = []
  result = restorer(models[0].name, photo, tile=0, progress=lambda done, total: reported.append((done, total)))
  assert reported == [(1, 1)]
  with Image.open(result.after) as out:
    assert out.format == pil_format and out.size == (45 * 4, 38 * 4)
    restored = np.asarray(out.convert("RGB"), np.float32) / 255
  with Image.open(result.before) as before:
    assert before.size == (45 * 4, 38 * 4)
  assert result.size == (180, 152) and result.summary().startswith("180x152 px, restored in ")
  # Reference: the Flax module on the decoded photo, unpadded. The server pads to 64x64 at the bottom and right,
  # which only the pixels within the network's reach of those sides can see: compare the top-left corner.
  generator = models[0].generator
  with Image.open(photo) as source:
    x = np.asarray(source.convert("RGB"), np.float32)[None] / 255
  direct = np.clip(np.asarray(generator.module.apply(generator.variables, x, train=False)), 0, 1)[0]
  corner = (slice(0, 40), slice(0, 40))
  tolerance = 1.5 / 255 if pil_format == "PNG" else 0.15  # 8-bit rounding; JPEG's own loss.
  assert np.abs(restored[corner] - direct[corner]).mean() < tolerance
  if pil_format == "PNG":
    assert np.abs(restored[corner] - direct[corner]).max() <= 0.5 / 255 + 1e-6


def test_similar_sizes_share_one_compilation(models):
  generator = models[0].generator
  bucketed = BucketedApply(inference.make_apply(generator.module), generator.variables, bucket=64)
  for height, width in ((20, 30), (64, 50), (33, 64)):  # All pad to 64x64.
    out = bucketed(np.zeros((1, height, width, 3), np.float32))
    assert out.shape == (1, height * 4, width * 4, 3)
  assert bucketed.shapes == {(1, 64, 64, 3)}
  assert bucketed._apply._cache_size() == 1  # Compilations of the jitted network.  # pylint: disable=protected-access
  bucketed(np.zeros((1, 65, 10, 3), np.float32))  # The next bucket: 128x64.
  assert bucketed.shapes == {(1, 64, 64, 3), (1, 128, 64, 3)}
  assert bucketed._apply._cache_size() == 2  # pylint: disable=protected-access


def test_progress_counts_tiles(models, restorer, tmp_path):
  photo = _photo(tmp_path / "wide.png", 150, 40)
  reported = []
  restorer(models[0].name, photo, tile=64, progress=lambda done, total: reported.append((done, total)))
  # Hand count: width 150 in 64-pixel tiles overlapping by at least 32 needs ceil((150 - 64) / 32) + 1 = 4 tiles;
  # height 40 is one tile.
  assert reported == [(1, 4), (2, 4), (3, 4), (4, 4)]


# ----- The page in a real browser -----------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _answers(url: str) -> bool:
  try:
    with urllib.request.urlopen(url, timeout=5) as response:
      return response.status == 200
  except OSError:
    return False


@pytest.fixture(scope="module")
def server(run_dir, not_a_run, tmp_path_factory):
  """The page for the tiny run (and a workdir that fails to load), on a free port of 127.0.0.1."""
  if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium); the browser test "
                "needs Debian's Chromium.")
  pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
  port = _free_port()
  log = tmp_path_factory.mktemp("server") / "server.log"
  env = cli.cli_env(1, GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(cli.REPO))
  with open(log, "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "restore_jax.serve", "--workdir", str(run_dir), "--workdir",
                             str(not_a_run), "--port", str(port), "--tile", "256"],
                            cwd=cli.REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}/"
  deadline = time.time() + 120
  while not _answers(url):
    assert proc.poll() is None, log.read_text()[-4000:]
    assert time.time() < deadline, log.read_text()[-4000:]
    time.sleep(0.5)
  yield url, log
  proc.terminate()
  try:
    proc.wait(timeout=20)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()


def test_page_restores_compares_and_downloads_then_survives_a_bad_file(server, tmp_path):
  from playwright.sync_api import expect, sync_playwright  # pylint: disable=g-import-not-at-top

  import skimage.data  # pylint: disable=g-import-not-at-top

  url, log = server
  photo = pathlib.Path(skimage.data.__file__).parent / "chelsea.png"  # A photo shipped with scikit-image.
  with Image.open(photo) as source:
    width, height = source.size
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM,
                                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    expect(page.locator("#model input")).to_have_value("sr_wgangp step 2 (bicubic, x4)")
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    page.locator("#restore").click()
    expect(page.locator("#summary textarea")).to_have_value(
        re.compile(rf"^{width * 4}x{height * 4} px, restored in "), timeout=90_000)
    slider_images = page.locator("#slider img")
    expect(slider_images.first).to_be_visible()

    # Drag the slider's handle from the middle to a quarter of the width: the handle follows.
    box = page.locator("#slider").bounding_box()
    handle = page.locator("#slider [data-testid=slider]")
    before_x = handle.bounding_box()["x"]
    y = box["y"] + box["height"] / 2
    page.mouse.move(before_x + handle.bounding_box()["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.25, y, steps=8)
    page.mouse.up()
    assert handle.bounding_box()["x"] < before_x - box["width"] * 0.1
    # The restored image is shown right of the handle only: its clip moved from 50 % to about a quarter.
    clip = page.locator("#slider img[data-testid=imageslider-image].fixed").get_attribute("style")
    assert 10 < float(re.search(r"inset\(\S+ \S+ \S+ ([\d.]+)%\)", clip).group(1)) < 40, clip

    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("RESTORE_JAX_SCREENSHOT"):
      shutil.copyfile(shot, os.environ["RESTORE_JAX_SCREENSHOT"])

    with page.expect_download() as download_info:
      page.locator("#download a.download-link").click()
    downloaded = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(downloaded)
    with Image.open(downloaded) as out:
      assert out.format == "PNG" and out.size == (width * 4, height * 4)

    fake = tmp_path / "not_a_photo.png"
    fake.write_text("This is a letter, not a photo.")
    page.locator("#photo button[aria-label='Remove Image']").click()
    page.locator("#photo input[type=file]").set_input_files(str(fake))
    page.locator("#restore").click()
    expect(page.get_by_text("not_a_photo.png is not an image this server can read")).to_be_visible(timeout=30_000)
    browser.close()
  assert _answers(url)
  logged = log.read_text()
  assert f"input={width}x{height} output={width * 4}x{height * 4}" in logged
  assert "not_a_photo.png is not an image" in logged


def test_python_client_restores_through_the_page(server, tmp_path):
  pytest.importorskip("gradio_client", reason="gradio_client is in the test extra")
  from gradio_client import Client, handle_file  # pylint: disable=g-import-not-at-top

  url, _ = server
  photo = _photo(tmp_path / "small.jpg", 24, 18)
  client = Client(url, verbose=False)
  (_, _), restored, summary = client.predict("sr_wgangp step 2 (bicubic, x4)", handle_file(str(photo)), None, 256,
                                             False, api_name="/restore")
  with Image.open(restored) as out:
    assert out.format == "JPEG" and out.size == (96, 72)
  assert summary.startswith("96x72 px")
