"""Checkpoints: damaged and half-written steps, config compatibility, the best checkpoint, loading for inference.

The state has the structure `create_gan_state` gives (found with jax.eval_shape, so nothing compiles) and random
contents, so "bit-identical after restore" compares real numbers. Damage is done to files on disk the way it
happens: a data file cut short or overwritten, an item missing, a save that never finished.
"""

import functools
import json
import logging
import shutil
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath
from etils.epath import testing as epath_testing

from configs import sr_wgangp
from restore_jax import checkpoint, data, inference, models
from restore_jax.state import create_gan_state

STEPS = (4, 8)  # Two checkpoints: the older one good, the newer one damaged by each test.


def _random_state(shapes, seed: int):
  """A state shaped like `shapes` with random contents (a different one per seed)."""
  rng = np.random.default_rng(seed)

  def fill(s):
    if jax.dtypes.issubdtype(s.dtype, jax.dtypes.prng_key):
      return jax.random.key(seed)
    if jnp.issubdtype(s.dtype, jnp.floating):
      return jnp.asarray(rng.standard_normal(s.shape).astype(s.dtype))
    return jnp.asarray(rng.integers(0, 1000, s.shape).astype(s.dtype))

  return jax.tree.map(fill, shapes)


def _host(tree):
  """Every leaf as a numpy array (PRNG keys as their raw bits), for exact comparisons."""
  return jax.tree.map(
      lambda x: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x),
      tree)


def _assert_identical(a, b):
  a, b = _host(a), _host(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and np.array_equal(x, y)


@pytest.fixture(scope="module")
def setup():
  config = sr_wgangp.get_config("tiny")
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  shapes = jax.eval_shape(functools.partial(create_gan_state, config, generator, discriminator), jax.random.key(0))
  states = {step: _random_state(shapes, seed=step) for step in STEPS}
  return config, generator, states


@pytest.fixture(scope="module")
def saved_run(setup, tmp_path_factory):
  """A workdir with config.json and checkpoints at STEPS; and the batch the iterator gave after each save."""
  config, _, states = setup
  workdir = tmp_path_factory.mktemp("run")
  (workdir / "config.json").write_text(json.dumps(config.to_dict(), default=str))
  iterator = data.make_train_iterator(config)
  manager = checkpoint.make_manager(workdir / "checkpoints", keep=3)
  next_batch = {}
  for step in STEPS:
    next(iterator)
    checkpoint.save(manager, step, states[step], iterator)
    manager.wait_until_finished()
    next_batch[step] = next(iterator)["target"]
  manager.close()
  return workdir, next_batch


@pytest.fixture
def run_copy(saved_run, tmp_path):
  workdir, next_batch = saved_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  return copy, next_batch


def _largest_array_file(step_dir: Path) -> Path:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir: Path):
  f = _largest_array_file(step_dir)
  f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _overwrite(step_dir: Path):
  f = _largest_array_file(step_dir)
  f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))


def _delete_data_item(step_dir: Path):
  shutil.rmtree(step_dir / "data")


def _garble_data_json(step_dir: Path):
  next((step_dir / "data").glob("*.json")).write_text("{ not json")


def _swap_state_files(step_dir: Path):
  """The older step's state files under the newer step's name: every file is intact and orbax reads it without
  complaint, but the bytes are not the ones saved at this step. Only the saved digest can tell."""
  shutil.rmtree(step_dir / "state")
  shutil.copytree(step_dir.parent / str(STEPS[0]) / "state", step_dir / "state")


@pytest.mark.parametrize("damage", [_truncate, _overwrite, _delete_data_item, _garble_data_json, _swap_state_files])
def test_damaged_newest_falls_back_to_previous_and_is_kept_aside(setup, run_copy, damage, caplog):
  config, _, states = setup
  workdir, next_batch = run_copy
  newest = workdir / "checkpoints" / str(STEPS[1])
  damage(newest)

  manager = checkpoint.make_manager(workdir / "checkpoints", keep=3)
  iterator = data.make_train_iterator(config)
  with caplog.at_level(logging.WARNING):
    state, step = checkpoint.restore_latest(manager, states[STEPS[1]], iterator)

  assert step == STEPS[0]
  _assert_identical(state, states[STEPS[0]])
  np.testing.assert_array_equal(next(iterator)["target"], next_batch[STEPS[0]])  # The data iterator rewound too.
  assert any(str(newest) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
  moved = list((workdir / "checkpoints_quarantine").glob(f"*/{STEPS[1]}"))
  assert len(moved) == 1 and (moved[0] / "state").is_dir(), "the damaged step must be kept, not deleted"
  assert not newest.exists()
  assert manager.all_steps() == [STEPS[0]]
  if damage is _truncate:  # Once is enough for what follows, which does not depend on the kind of damage.
    # Orbax refuses to write a step that exists; the damaged one is out of the way, so the run can write it again.
    checkpoint.save(manager, STEPS[1], states[STEPS[1]], iterator)
    manager.wait_until_finished()
    again, step = checkpoint.restore_latest(manager, states[STEPS[0]], data.make_train_iterator(config))
    assert step == STEPS[1]
    _assert_identical(again, states[STEPS[1]])
  manager.close()


def test_half_written_save_is_moved_aside_before_orbax_sees_it(setup, run_copy, caplog):
  config, _, states = setup
  workdir, _ = run_copy
  tmp = workdir / "checkpoints" / f"{STEPS[1] + 4}.orbax-checkpoint-tmp-1234"
  shutil.copytree(workdir / "checkpoints" / str(STEPS[1]), tmp)
  with caplog.at_level(logging.WARNING):
    manager = checkpoint.make_manager(workdir / "checkpoints", keep=3)
  assert any(tmp.name in r.getMessage() for r in caplog.records)
  assert not tmp.exists() and list((workdir / "checkpoints_quarantine").glob(f"*/{tmp.name}"))
  state, step = checkpoint.restore_latest(manager, states[STEPS[0]], data.make_train_iterator(config))
  assert step == STEPS[1]
  _assert_identical(state, states[STEPS[1]])
  manager.close()


def test_no_readable_checkpoint_raises_and_moves_nothing(setup, run_copy):
  """When every step fails, the cause is more likely the reader's (storage, code) than damage to all of them."""
  config, _, states = setup
  workdir, _ = run_copy
  for step in STEPS:
    _delete_data_item(workdir / "checkpoints" / str(step))
  manager = checkpoint.make_manager(workdir / "checkpoints", keep=3)
  with pytest.raises(checkpoint.NoGoodCheckpoint, match=f"(?s)step {STEPS[1]}: KeyError.*step {STEPS[0]}: KeyError"):
    checkpoint.restore_latest(manager, states[STEPS[1]], data.make_train_iterator(config))
  assert all((workdir / "checkpoints" / str(step)).is_dir() for step in STEPS)
  assert not (workdir / "checkpoints_quarantine").exists()
  manager.close()


def test_empty_directory_restores_nothing(setup, tmp_path):
  config, _, states = setup
  manager = checkpoint.make_manager(tmp_path / "checkpoints", keep=3)
  state, step = checkpoint.restore_latest(manager, states[STEPS[0]], data.make_train_iterator(config))
  assert step == 0 and state is states[STEPS[0]]
  manager.close()


# ---------------------------------------------------------------------------------------------- Config


def _changed(**overrides):
  c = sr_wgangp.get_config("tiny")
  for key, value in overrides.items():
    *parents, leaf = key.split("__")
    functools.reduce(getattr, parents, c)[leaf] = value
  return c


@pytest.fixture
def recorded(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(sr_wgangp.get_config("tiny").to_dict(), default=str))
  return tmp_path


def test_same_config_and_no_record_are_compatible(recorded, tmp_path_factory):
  checkpoint.check_config_compatible(recorded, sr_wgangp.get_config("tiny"))
  checkpoint.check_config_compatible(tmp_path_factory.mktemp("fresh"), _changed(batch_size=4))


@pytest.mark.parametrize("overrides, names", [
    ({"generator__num_feat": 16}, ["generator.num_feat: 8 -> 16"]),
    ({"batch_size": 4, "data__crop_size": 64}, ["batch_size: 8 -> 4", "data.crop_size: 32 -> 64"]),
    ({"degradation__scale": 2}, ["degradation.scale: 4 -> 2"]),
    ({"optim__grad_clip_norm": 1.0}, ["optim.grad_clip_norm: 0.0 -> 1.0"]),
    ({"data__num_workers": 2}, ["data.num_workers: 0 -> 2"]),  # grain's saved iterator state changes form.
])
def test_state_changing_config_is_refused_naming_each_key(recorded, overrides, names):
  with pytest.raises(checkpoint.IncompatibleConfig) as info:
    checkpoint.check_config_compatible(recorded, _changed(total_steps=10, **overrides))
  message = str(info.value)
  for name in names:
    assert name in message
  assert "total_steps" not in message  # Only the keys that matter.
  assert "--workdir" in message
  assert isinstance(info.value, ValueError)


def test_harmless_changes_pass_and_reproducibility_changes_warn(recorded, caplog):
  with caplog.at_level(logging.INFO):
    checkpoint.check_config_compatible(recorded, _changed(total_steps=100, log_every=7, eval__max_images=3))
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert any("total_steps: 4 -> 100" in r.getMessage() for r in caplog.records)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    checkpoint.check_config_compatible(recorded, _changed(seed=3, data__source="folder:/elsewhere"))
  warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
  assert "seed: 0 -> 3" in warnings and 'data.source: "samples" -> "folder:/elsewhere"' in warnings


# ---------------------------------------------------------------------------------------------- Object stores


def _gcs_as(local_root: Path):
  """epath calls on gs://bucket/... served from `local_root`; os-level calls on a gs:// string fail loudly."""

  def local(path) -> str:
    path = str(path)
    return str(local_root / path[len("gs://bucket/"):]) if path.startswith("gs://bucket/") else path

  def redirect(original, path, *args, **kwargs):
    return original(local(path), *args, **kwargs)

  def redirect2(original, path, dst, *args, **kwargs):
    return original(local(path), local(dst), *args, **kwargs)

  return epath_testing.mock_epath(
      open=redirect, exists=redirect, isdir=redirect, listdir=redirect, glob=redirect, makedirs=redirect,
      mkdir=redirect, rename=redirect2, replace=redirect2, stat=redirect, walk=redirect)


def test_object_store_paths_go_through_epath(recorded, tmp_path, monkeypatch, caplog):
  """gs:// workdirs are read, listed and moved with etils.epath, never with os.path or open()."""
  import os.path as os_path

  # With TensorFlow installed epath sends gs:// to TensorFlow's GCS client rather than to the mocked backend.
  monkeypatch.setattr(epath.gpath, "_is_tf_installed", lambda: False)
  for name in ("exists", "isdir", "isfile", "getsize", "abspath", "realpath"):  # What touches a disk or a cwd.
    original = getattr(os_path, name)

    def guarded(path, *rest, _original=original):
      assert not str(path).startswith("gs://"), f"os.path was called on {path}"
      return _original(path, *rest)

    monkeypatch.setattr(os_path, name, guarded)
  bucket = tmp_path / "bucket"
  shutil.copytree(recorded, bucket / "run")
  # On an object store a save in progress is a step directory without orbax's commit file.
  unfinished = bucket / "run" / "checkpoints" / "12"
  (unfinished / "state").mkdir(parents=True)
  finished = bucket / "run" / "checkpoints" / "8"
  (finished / "state").mkdir(parents=True)
  (finished / checkpoint.COMMIT_FILE).write_text("done")

  with _gcs_as(tmp_path / "bucket"):
    with pytest.raises(checkpoint.IncompatibleConfig, match="batch_size: 8 -> 4"):
      checkpoint.check_config_compatible("gs://bucket/run", _changed(batch_size=4))
    with caplog.at_level(logging.WARNING):
      moved = checkpoint.quarantine_half_written("gs://bucket/run/checkpoints")
  assert [str(p) for p in moved] == [f"gs://bucket/run/checkpoints_quarantine/{moved[0].parent.name}/12"]
  assert not unfinished.exists() and (bucket / "run" / "checkpoints_quarantine" / moved[0].parent.name / "12").is_dir()
  assert finished.is_dir()
  assert any("gs://bucket/run/checkpoints/12" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------- Best checkpoint


def test_best_checkpoint_keeps_the_maximum_across_reopening(setup, tmp_path):
  config, _, states = setup
  manager = checkpoint.make_best_manager(tmp_path / "best")
  a, b = states[STEPS[0]], states[STEPS[1]]
  assert checkpoint.save_best(manager, 4, a, {"psnr_y": 20.0, "ssim_y": 0.5}, "psnr_y")
  assert not checkpoint.save_best(manager, 8, b, {"psnr_y": 19.5, "ssim_y": 0.9}, "psnr_y")
  assert checkpoint.save_best(manager, 12, b, {"psnr_y": 21.0, "ssim_y": 0.4}, "psnr_y")
  manager.wait_until_finished()
  manager.close()

  reopened = checkpoint.make_best_manager(tmp_path / "best")
  assert checkpoint.best_metrics(reopened) == (12, {"psnr_y": 21.0, "ssim_y": 0.4})
  assert not checkpoint.save_best(reopened, 16, a, {"psnr_y": 20.9}, "psnr_y")  # Remembered after the restart.
  assert not checkpoint.save_best(reopened, 20, a, {"psnr_y": float("nan")}, "psnr_y")
  with pytest.raises(ValueError, match="eval.best_metric"):
    checkpoint.save_best(reopened, 24, a, {"psnr_y": 30.0}, "psnr_rgb")
  reopened.wait_until_finished()
  assert reopened.all_steps() == [12]
  assert sorted(p.name for p in (tmp_path / "best").iterdir() if p.is_dir()) == ["12"]
  reopened.close()

  (tmp_path / "config.json").write_text(json.dumps(config.to_dict(), default=str))
  loaded = inference.load_generator(tmp_path, step="best")
  assert loaded.step == 12
  _assert_identical(loaded.variables["params"], b.ema_params)


# ---------------------------------------------------------------------------------------------- Inference


def test_load_generator_returns_the_saved_ema_or_raw_params(setup, saved_run, monkeypatch):
  config, generator, states = setup
  workdir, _ = saved_run
  newest = states[STEPS[1]]
  ema = inference.load_generator(workdir)
  assert ema.step == STEPS[1] and ema.scale == 4
  assert ema.config.generator.num_feat == config.generator.num_feat
  assert ema.module == generator
  _assert_identical(ema.variables["params"], newest.ema_params)

  raw = inference.load_generator(workdir, use_ema=False)
  _assert_identical(raw.variables["params"], newest.generator.params)
  with monkeypatch.context() as m:  # A relative --workdir, as users type it (orbax itself refuses them).
    m.chdir(Path(workdir).parent)
    _assert_identical(inference.load_generator(Path(workdir).name).variables["params"], newest.ema_params)
  older = inference.load_generator(workdir, step=STEPS[0])
  assert older.step == STEPS[0]
  _assert_identical(older.variables["params"], states[STEPS[0]].ema_params)
  with pytest.raises(inference.NoCheckpoint, match="step 5"):
    inference.load_generator(workdir, step=5)

  apply = inference.make_apply(ema.module)
  x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
  y = np.asarray(apply(ema.variables, x))
  unclipped = np.asarray(generator.apply({"params": newest.ema_params}, x))
  assert y.shape == (2, 32, 32, 3)
  assert unclipped.min() < 0 or unclipped.max() > 1  # Random weights: the clip has work to do.
  np.testing.assert_allclose(y, np.clip(unclipped, 0, 1), atol=1e-5)


def test_load_generator_skips_a_damaged_newest_and_leaves_it_in_place(setup, run_copy, caplog):
  """Damage to the generator's arrays (here: another step's bytes, caught by the digest) skips the step.
  (Damage elsewhere in the state does not matter to inference, which reads the generator only.)"""
  _, _, states = setup
  workdir, _ = run_copy
  _swap_state_files(workdir / "checkpoints" / str(STEPS[1]))
  with caplog.at_level(logging.WARNING):
    loaded = inference.load_generator(workdir)
  assert loaded.step == STEPS[0]
  _assert_identical(loaded.variables["params"], states[STEPS[0]].ema_params)
  assert any(f"step {STEPS[1]}" in r.getMessage() for r in caplog.records)
  assert (workdir / "checkpoints" / str(STEPS[1])).is_dir()  # Read-only: a training run may own the directory.


def test_load_generator_explains_what_is_missing(saved_run, tmp_path):
  with pytest.raises(inference.NoCheckpoint, match="config.json"):
    inference.load_generator(tmp_path)
  shutil.copy(saved_run[0] / "config.json", tmp_path / "config.json")
  with pytest.raises(inference.NoCheckpoint, match="no checkpoint"):
    inference.load_generator(tmp_path)
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(inference.NoCheckpoint, match="no usable checkpoint"):
    inference.load_generator(tmp_path)
  assert issubclass(inference.NoCheckpoint, ValueError)


def _garble_metrics(step_dir: Path):
  (step_dir / "metrics" / "metrics").write_text("{ not json")


def _truncate_every_array_file(step_dir: Path):
  for f in (step_dir / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _another_runs_state(step_dir: Path):
  """Intact files that orbax reads without complaint, but of another state: only the digest can tell."""
  other = step_dir.parent.parent / "other_best"
  manager = checkpoint.make_best_manager(other)
  shapes = jax.tree.map(ocp.utils.to_shape_dtype_struct, _random_state_like_setup())
  assert checkpoint.save_best(manager, 4, _random_state(shapes, seed=99), {"psnr_y": 1.0}, "psnr_y")
  manager.wait_until_finished()
  manager.close()
  shutil.rmtree(step_dir / "state")
  shutil.copytree(other / "4" / "state", step_dir / "state")


def _random_state_like_setup():
  config = sr_wgangp.get_config("tiny")
  generator, discriminator = models.make_generator(config.generator), models.make_discriminator(config.discriminator)
  return jax.eval_shape(functools.partial(create_gan_state, config, generator, discriminator), jax.random.key(0))


@pytest.mark.parametrize("damage", [_garble_metrics, _truncate_every_array_file, _another_runs_state])
def test_damaged_best_is_set_aside_and_a_new_best_begins(setup, tmp_path, damage, caplog):
  """A best checkpoint that no longer reads (its metrics, or the generator that evaluation and restoration load)
  does not stop training: it is moved aside with a warning and the next evaluation becomes the best, however it
  scores."""
  _, _, states = setup
  manager = checkpoint.make_best_manager(tmp_path / "best")
  assert checkpoint.save_best(manager, 4, states[STEPS[0]], {"psnr_y": 30.0}, "psnr_y")
  manager.wait_until_finished()
  manager.close()
  damage(tmp_path / "best" / "4")

  reopened = checkpoint.make_best_manager(tmp_path / "best")
  with caplog.at_level(logging.WARNING):
    assert checkpoint.save_best(reopened, 8, states[STEPS[1]], {"psnr_y": 20.0}, "psnr_y")
  reopened.wait_until_finished()
  assert reopened.all_steps() == [8]
  moved = list((tmp_path / "best_quarantine").glob("*/4"))
  assert len(moved) == 1 and moved[0].is_dir(), "the damaged best must be kept, not deleted"
  assert any(str(tmp_path / "best" / "4") in r.getMessage() and r.levelno == logging.WARNING
             for r in caplog.records)
  # Later evaluations compare with the new best, as before.
  assert not checkpoint.save_best(reopened, 12, states[STEPS[0]], {"psnr_y": 19.0}, "psnr_y")
  reopened.wait_until_finished()
  reopened.close()


# ---------------------------------------------------------------------------------------------- Reading less


def _bytes_read() -> int:
  """Bytes tensorstore has read from local files in this process so far (its own counter)."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top

  metrics = ts.experimental_collect_matching_metrics("/tensorstore/kvstore/file/bytes_read")
  return sum(int(v["value"]) for m in metrics for v in m["values"])


def test_inference_reads_the_generator_and_not_the_critic_or_optimizers(tmp_path):
  """load_generator reads the generator's weights only: with a critic 60x the generator's size (and two Adam
  moments of each), the bytes read from disk stay near the generator's own."""
  config = sr_wgangp.get_config("tiny")
  config.discriminator.num_feat = 32  # ~3.4 M critic parameters against the generator's ~40 k.
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  shapes = jax.eval_shape(functools.partial(create_gan_state, config, generator, discriminator), jax.random.key(0))
  state = _random_state(shapes, seed=3)
  (tmp_path / "config.json").write_text(json.dumps(config.to_dict(), default=str))
  manager = checkpoint.make_manager(tmp_path / "checkpoints", keep=1)
  checkpoint.save(manager, 5, state, data.make_train_iterator(config))
  manager.wait_until_finished()
  manager.close()

  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  generator_bytes = nbytes(state.ema_params)
  state_bytes = nbytes(state.generator) + nbytes(state.discriminator)
  before = _bytes_read()
  loaded = inference.load_generator(tmp_path)
  read = _bytes_read() - before
  _assert_identical(loaded.variables["params"], state.ema_params)
  assert state_bytes > 50 * generator_bytes  # The test can tell the two apart.
  assert read < 2 * generator_bytes + 256 * 1024, (read, generator_bytes, state_bytes)

  before = _bytes_read()
  raw = inference.load_generator(tmp_path, use_ema=False)
  assert _bytes_read() - before < 2 * generator_bytes + 256 * 1024
  _assert_identical(raw.variables["params"], state.generator.params)


# ---------------------------------------------------------------------------------------------- Digest


def test_save_makes_no_copy_of_the_state_for_its_digest(setup, tmp_path):
  """The digest costs the loop no copy of the state: a save allocates on the host what orbax's own save of the
  same items does, give or take far less than the largest array (CRC32 of each array's bytes copied it)."""
  import tracemalloc  # pylint: disable=g-import-not-at-top

  config, _, states = setup
  big = jnp.asarray(np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32))  # 16 MiB.
  state = {"big": big, "small": states[STEPS[0]].ema_params}
  iterator = data.make_train_iterator(config)
  plain = ocp.CheckpointManager(tmp_path / "plain", item_names=("state", "data"),
                                options=ocp.CheckpointManagerOptions(enable_async_checkpointing=True))

  def peak_allocated(manager, save) -> int:
    for step in (1, 2):  # The first save of each kind pays one-off costs (compilation, handler set-up).
      tracemalloc.start()
      save(step)
      peak = tracemalloc.get_traced_memory()[1]
      # Stopping tracemalloc while orbax's writer threads still allocate can crash CPython: let them finish.
      manager.wait_until_finished()
      tracemalloc.stop()
    return peak

  ours = checkpoint.make_manager(tmp_path / "ours", keep=3)
  ours_peak = peak_allocated(ours, lambda step: checkpoint.save(ours, step, state, iterator))
  plain_peak = peak_allocated(plain, lambda step: plain.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator))))
  for manager in (ours, plain):
    manager.close()
  assert ours_peak - plain_peak < big.nbytes // 4, (ours_peak, plain_peak)
  restored, step = checkpoint.restore_latest(checkpoint.make_manager(tmp_path / "ours", keep=3), state,
                                             data.make_train_iterator(config))
  assert step == 2
  _assert_identical(restored, state)


def _fmix32(x: np.ndarray) -> np.ndarray:
  """MurmurHash3's 32-bit finaliser (Appleby 2011), in numpy uint64 arithmetic kept to 32 bits."""
  x = x.astype(np.uint64)
  x ^= x >> np.uint64(16)
  x = (x * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
  x ^= x >> np.uint64(13)
  x = (x * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
  x ^= x >> np.uint64(16)
  return x


def _numpy_fingerprint(array: np.ndarray) -> list[int]:
  """The documented fingerprint, written with numpy: (sum of fmix32(word + i * 0x9E3779B9), sum of
  word * (2i + 1)) over the array's 32-bit words in C order, both modulo 2^32."""
  words = np.ascontiguousarray(array).view(np.uint32).reshape(-1).astype(np.uint64)
  i = np.arange(words.size, dtype=np.uint64)
  mixed = _fmix32((words + i * np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF))
  weighted = (words * (2 * i + 1)) & np.uint64(0xFFFFFFFF)
  return [int(mixed.sum() & np.uint64(0xFFFFFFFF)), int(weighted.sum() & np.uint64(0xFFFFFFFF))]


def test_fingerprint_matches_numpy_and_changes_with_any_one_element():
  rng = np.random.default_rng(5)
  x = rng.standard_normal((3, 5, 7)).astype(np.float32)
  tree = {"a": jnp.asarray(x), "b": {"c": jnp.arange(6, dtype=jnp.int32)}}
  got = checkpoint.state_fingerprint(tree)
  assert got == {"['a']": _numpy_fingerprint(x), "['b']['c']": _numpy_fingerprint(np.arange(6, dtype=np.int32))}
  # The same on 8 devices, replicated, as on one.
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  spread = jax.device_put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  assert checkpoint.state_fingerprint(spread) == got
  flat = x.reshape(-1)
  for index in (0, 17, flat.size - 1):  # One bit of one element, anywhere.
    flipped = flat.copy().view(np.uint32)
    flipped[index] ^= np.uint32(1 << (index % 32))
    assert checkpoint.state_fingerprint({"a": jnp.asarray(flipped.view(np.float32))})["['a']"] != got["['a']"]
  swapped = flat.copy()
  swapped[[3, 4]] = swapped[[4, 3]]  # Same values, two of them in each other's place.
  assert checkpoint.state_fingerprint({"a": jnp.asarray(swapped)})["['a']"] != got["['a']"]


# ---------------------------------------------------------------------------------------------- Samples


def test_changed_sample_photos_warn_with_the_difference(recorded, caplog):
  files = {"skimage/data/astronaut.png": "a" * 64, "skimage/data/coffee.png": "b" * 64,
           "sklearn/datasets/images/china.jpg": "c" * 64}
  record = json.loads((recorded / "config.json").read_text())
  record["sample_files"] = files
  (recorded / "config.json").write_text(json.dumps(record))
  with caplog.at_level(logging.WARNING):
    checkpoint.check_config_compatible(recorded, sr_wgangp.get_config("tiny"), sample_files=files)
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
  now = {"skimage/data/astronaut.png": "a" * 64, "skimage/data/coffee.png": "d" * 64,
         "matplotlib/mpl-data/sample_data/grace_hopper.jpg": "e" * 64}
  with caplog.at_level(logging.WARNING):
    checkpoint.check_config_compatible(recorded, sr_wgangp.get_config("tiny"), sample_files=now)
  warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
  assert "sklearn/datasets/images/china.jpg" in warning and "grace_hopper.jpg" in warning
  assert "skimage/data/coffee.png" in warning and "astronaut" not in warning
