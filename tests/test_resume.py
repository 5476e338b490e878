"""Never lose a run, through the real command line: exact resume, kill -TERM, the non-finite guard, bad data,
an incompatible config and a half-written checkpoint.

Every run uses the tiny recipe on 2 fake CPU devices; the reference is one uninterrupted run of REF_STEPS steps,
compared bit for bit (same topology, so same reductions, so the same floats).
"""

import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import REPO, assert_trees_equal, cli_env, read_state, train_command

REF_STEPS = 24
# Every step logged, so the per-step batch statistics can be compared and a running process can be watched;
# no periodic evaluation (tested in test_train.py), which would only add compile time here.
COMMON = ("--config.log_every=1", "--config.eval_every=1000", "--config.checkpoint_every=1000",
          "--config.eval.holdout=0")


class Run:
  """A training process whose stderr is collected by a thread, so several can run side by side.

  Each run spends most of its time compiling, one core each: starting them together halves the module's time.
  """

  def __init__(self, workdir: Path, *extra: str, signal_after_step: int | None = None,
               signal_on: str | None = None):
    self.workdir, self.lines = workdir, []
    # SIGTERM after the given step is logged, or as soon as a log line contains `signal_on`.
    self.signal_after_step, self.signal_on = signal_after_step, signal_on
    self.compiled = threading.Event()
    self.proc = subprocess.Popen(train_command(workdir, *COMMON, *extra), cwd=REPO, env=cli_env(2),
                                 stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self) -> None:
    for line in self.proc.stderr:
      self.lines.append(line)
      if "Compiled the train step" in line:
        self.compiled.set()
      # clu's logging writer prints "[STEP] name=value, ..." once per logged step.
      if self.signal_after_step is not None and re.search(rf"\] \[{self.signal_after_step}\] ", line):
        self.proc.send_signal(signal.SIGTERM)  # Preempt it while it trains.
        self.signal_after_step = None
      if self.signal_on is not None and self.signal_on in line:
        self.proc.send_signal(signal.SIGTERM)  # Preempt it while it starts.
        self.signal_on = None

  def wait(self) -> "Run":
    self.proc.wait(timeout=900)
    self._reader.join()
    self.compiled.set()
    self.returncode, self.stderr = self.proc.returncode, "".join(self.lines)
    return self


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
  """Every training run of this module, started together and awaited in two rounds."""
  root = tmp_path_factory.mktemp("resume")
  folder = root / "images"
  _messy_folder(folder, good=1, broken=6)
  reference = Run(root / "reference", f"--config.total_steps={REF_STEPS}")
  reference.compiled.wait(timeout=600)  # The others then load its programs from the compilation cache.
  first = {
      "reference": reference,
      "half": Run(root / "half", f"--config.total_steps={REF_STEPS // 2}"),
      "killed": Run(root / "killed", f"--config.total_steps={REF_STEPS}", signal_after_step=2),
      # Step 2 alone is poisoned (skipped, counted); then 4, 5, 6 in a row reach the limit of 3.
      "nonfinite": Run(root / "nonfinite", "--config.total_steps=20", "--config.checkpoint_every=3",
                       "--config.max_consecutive_nonfinite=3", "--config.debug.poison_steps=(2, 4, 5, 6)"),
      "bad_data": Run(root / "bad_data", f"--config.data.source=folder:{folder}", "--config.total_steps=10"),
      "messy": Run(root / "messy", f"--config.data.source=folder:{_every_kind_of_file(root / 'messy_images')}",
                   "--config.total_steps=6", "--config.data.max_skip_fraction=0.9",
                   "--config.data.max_image_pixels=100000"),
  }
  runs = {name: run.wait() for name, run in first.items()}
  for name in ("reference", "half"):
    assert runs[name].returncode == 0, runs[name].stderr[-3000:]
  # A save that died half-way (orbax writes into a tmp directory and renames it when committed).
  half_written = root / "half" / "checkpoints" / f"{REF_STEPS}.orbax-checkpoint-tmp-1234"
  (half_written / "state").mkdir(parents=True)
  (half_written / "state" / "junk").write_bytes(b"\0" * 100)
  second = {"half_resumed": Run(root / "half", f"--config.total_steps={REF_STEPS}")}
  # Preempted while it starts: set-up, restoring step REF_STEPS, compiling. Its own copy of the finished run.
  shutil.copytree(root / "reference", root / "startup")
  second["startup"] = Run(root / "startup", f"--config.total_steps={REF_STEPS + 8}", signal_on="Mesh ")
  if runs["killed"].returncode == 75:
    second["killed_resumed"] = Run(root / "killed", f"--config.total_steps={REF_STEPS}")
  runs.update({name: run.wait() for name, run in second.items()})
  return runs


def _per_step(workdir: Path, tag: str) -> dict[int, float]:
  """tag's value at every logged step, from the TensorBoard events read with TensorFlow."""
  import tensorflow as tf

  values = {}
  for path in sorted(workdir.glob("events.out.tfevents*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
  return values


def test_half_then_resumed_half_is_bit_identical(runs):
  resumed, reference = runs["half_resumed"], runs["reference"]
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resumed from the checkpoint of step {REF_STEPS // 2}" in resumed.stderr
  half_written = f"{REF_STEPS}.orbax-checkpoint-tmp-1234"
  assert half_written in resumed.stderr  # Named in a warning ...
  assert list(resumed.workdir.parent.rglob(half_written)), "the half-written checkpoint was deleted"  # ... kept.

  assert_trees_equal(read_state(resumed.workdir, REF_STEPS), read_state(reference.workdir, REF_STEPS))
  # The batches: psnr_baseline is a function of the batch alone, so equal sequences mean equal batches.
  for tag in ("psnr_baseline", "g_loss"):
    want, got = _per_step(reference.workdir, tag), _per_step(resumed.workdir, tag)
    assert sorted(got) == list(range(1, REF_STEPS + 1))
    assert got == want, tag


def test_kill_term_saves_and_the_restart_continues_exactly(runs):
  killed = runs["killed"]
  assert killed.returncode == 75, killed.stderr[-3000:]
  stopped = int(re.search(r"Stopped by SIGTERM after step (\d+)", killed.stderr).group(1))
  assert 2 <= stopped < REF_STEPS, "the signal arrived too late to test anything"
  assert (killed.workdir / "checkpoints" / str(stopped)).is_dir()

  resumed = runs["killed_resumed"]
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resumed from the checkpoint of step {stopped}" in resumed.stderr
  assert_trees_equal(read_state(killed.workdir, REF_STEPS), read_state(runs["reference"].workdir, REF_STEPS))


def test_kill_term_during_start_up_exits_75_and_loses_nothing(runs):
  """A scheduler that preempts a job while it restores or compiles sees "preempted" (75), not a kill (143)."""
  run = runs["startup"]
  assert run.returncode == 75, (run.returncode, run.stderr[-3000:])
  assert "Stopped by SIGTERM" in run.stderr and "Traceback" not in run.stderr
  steps = sorted(int(p.name) for p in (run.workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == REF_STEPS  # Nothing trained, nothing lost: the newest checkpoint is the one it started from.
  assert_trees_equal(read_state(run.workdir, REF_STEPS), read_state(runs["reference"].workdir, REF_STEPS))


def test_nonfinite_steps_are_skipped_then_stop_the_run(runs):
  run = runs["nonfinite"]
  assert run.returncode == 70, run.stderr[-3000:]
  assert "3 consecutive steps up to step 6 had NaN or Inf" in run.stderr
  assert "Traceback" not in run.stderr
  # The stop is noticed one step late (the host reads step 6's counter after starting step 7) and saved there.
  steps = sorted(int(p.name) for p in (run.workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 7
  at_3, at_6 = read_state(run.workdir, 3), read_state(run.workdir, 6)
  for part in ("generator", "discriminator", "ema_params"):  # Steps 4-6 changed nothing but the counters.
    assert_trees_equal(at_3[part], at_6[part])
  assert int(at_6["nonfinite_steps"]) == 4 and int(at_6["consecutive_nonfinite"]) == 3
  nonfinite = _per_step(run.workdir, "nonfinite_steps")
  assert nonfinite[1] == 0 and nonfinite[2] == 1 and nonfinite[3] == 1 and nonfinite[6] == 4


def test_a_messy_folder_trains_to_the_end_and_counts_skips_per_reason(runs):
  run = runs["messy"]
  assert run.returncode == 0, run.stderr[-3000:]
  for reason in ("decode", "empty", "small", "huge"):
    assert _per_step(run.workdir, f"data/skipped_{reason}")[6] >= 1, reason
  assert "Records skipped so far:" in run.stderr
  for name in ("empty.png", "decode_text.png", "small.png", "huge.png"):
    assert name in run.stderr  # Each bad file is named in a warning.
  assert (run.workdir / "checkpoints" / "6").is_dir()


def test_incompatible_config_stops_with_the_difference(runs):
  proc = subprocess.run(train_command(runs["reference"].workdir, "--config.generator.num_feat=16",
                                      "--config.batch_size=4"),
                        cwd=REPO, env=cli_env(2), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 78, proc.stderr[-3000:]
  assert "generator.num_feat" in proc.stderr and "batch_size" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_mostly_broken_data_stops_with_a_clear_error(runs):
  run = runs["bad_data"]
  assert run.returncode == 65, run.stderr[-3000:]
  assert "data.max_skip_fraction" in run.stderr and "Traceback" not in run.stderr
  assert _per_step(run.workdir, "data/skip_fraction")[1] > 0.5


def _every_kind_of_file(path: Path) -> Path:
  """Images in every mode a folder of photos holds, plus the files that break pipelines (reason in the name)."""
  path.mkdir()
  rng = np.random.default_rng(1)
  pixels = lambda *shape: rng.integers(0, 256, shape, np.uint8)
  Image.fromarray(pixels(40, 44, 3)).save(path / "rgb.png")
  Image.fromarray(pixels(40, 44)).save(path / "gray.png")
  Image.fromarray(pixels(40, 44, 4)).save(path / "rgba.png")
  Image.fromarray(pixels(40, 44, 3)).convert("P").save(path / "palette.png")
  Image.fromarray(pixels(40, 44, 3)).convert("CMYK").save(path / "cmyk.jpg")
  Image.fromarray(rng.integers(0, 65536, (40, 44), np.uint16)).save(path / "gray16.png")
  Image.fromarray(pixels(40, 44, 3)).save(path / "png_named.jpg", format="PNG")
  (path / "empty.png").write_bytes(b"")
  (path / "decode_text.png").write_text("this is not an image")
  Image.fromarray(pixels(16, 16, 3)).save(path / "small.png")
  Image.fromarray(pixels(400, 400, 3)).save(path / "huge.png")  # Over the run's max_image_pixels of 100,000.
  return path


def _messy_folder(path: Path, good: int, broken: int) -> None:
  path.mkdir()
  rng = np.random.default_rng(0)
  for i in range(good):
    Image.fromarray(rng.integers(0, 256, (48, 56, 3), np.uint8)).save(path / f"good{i}.png")
  for i in range(broken):
    (path / f"broken{i}.png").write_bytes(b"not an image" * i)  # broken0.png is a zero-byte file.
  Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(path / "tiny.png")
