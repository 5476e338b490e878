"""The tfds:NAME[:SPLIT] source, on a tiny dataset written here in array_record."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from restore_jax.data import eval_source, holdout_split, make_source, make_train_iterator, to_rgb_float

_NUM_GOOD = 5


def _images():
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (40 + i, 36, 3), np.uint8)
            for i in range(_NUM_GOOD)]
  images.append(rng.integers(0, 256, (12, 12, 3), np.uint8))  # Too small.
  return images


class TinyRestoreImages(tfds.core.GeneratorBasedBuilder):
  """A few random images in a "hr" feature, with a second image feature."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "hr": tfds.features.Image(shape=(None, None, 3)),
        "image": tfds.features.Image(shape=(None, None, 3)),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples(), "test": self._generate_examples()}

  def _generate_examples(self):
    for i, image in enumerate(_images()):
      yield i, {"hr": image, "image": np.zeros((8, 8, 3), np.uint8)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  builder = TinyRestoreImages(data_dir=str(root), file_format="array_record")
  builder.download_and_prepare()
  return str(root)


def test_reads_the_prepared_images(data_dir):
  source = make_source("tfds:tiny_restore_images:train", tfds_data_dir=data_dir)
  assert len(source) == _NUM_GOOD + 1
  decoded = sorted((to_rgb_float(source[i]) for i in range(len(source))),
                   key=lambda img: img.shape[0])
  expected = sorted(_images(), key=lambda img: img.shape[0])
  for image, reference in zip(decoded, expected):
    np.testing.assert_allclose(image, reference / 255.0, atol=1e-6)
  assert "tiny_restore_images" in source.name(0)


def test_image_key_selects_the_feature(data_dir):
  source = make_source("tfds:tiny_restore_images:test", tfds_data_dir=data_dir,
                       image_key="image")
  assert to_rgb_float(source[0]).shape == (8, 8, 3)
  with pytest.raises(KeyError, match="image_key"):
    make_source("tfds:tiny_restore_images", tfds_data_dir=data_dir,
                image_key="label")
  with pytest.raises(ValueError, match="no split"):
    make_source("tfds:tiny_restore_images:validation", tfds_data_dir=data_dir)


def test_pipeline_yields_batches_and_skips_the_small_image(data_dir):
  config = ml_collections.ConfigDict(dict(
      seed=0, batch_size=4,
      data=dict(source="tfds:tiny_restore_images:train", crop_size=32,
                augment=True, num_workers=0, prefetch=2,
                tfds_data_dir=data_dir, image_key=None, max_skip_fraction=0.5),
      task=dict(scale=4), degradation=dict(name="bicubic", scale=4)))
  iterator = make_train_iterator(config)
  batches = [next(iterator) for _ in range(3)]  # 12 samples: two epochs.
  for batch in batches:
    assert batch["target"].shape == (4, 32, 32, 3)
    assert batch["input"].shape == (4, 8, 8, 3)
  skipped_small = np.concatenate([b["skipped_small"] for b in batches])
  # One small record per epoch of six, reached from itself: two skips.
  assert skipped_small.sum() == 2
  np.testing.assert_array_equal(
      np.concatenate([b["skipped_decode"] for b in batches]), 0)


def test_holdout_of_a_tfds_split(data_dir):
  source = make_source("tfds:tiny_restore_images:train", tfds_data_dir=data_dir)
  train, held = holdout_split(source, 2)
  held_names = [held.name(i) for i in range(2)]
  assert sorted([train.name(i) for i in range(len(train))] + held_names) == sorted(
      source.name(i) for i in range(len(source)))
  indices = [int(name.rsplit("[", 1)[1].rstrip("]")) for name in held_names]
  for i, index in enumerate(indices):  # The held-out records are the source's records of those names.
    np.testing.assert_array_equal(to_rgb_float(held[i]), to_rgb_float(source[index]))
  config = ml_collections.ConfigDict(dict(
      data=dict(source="tfds:tiny_restore_images:train", tfds_data_dir=data_dir, image_key=None),
      eval=dict(data="", holdout=2)))
  assert [eval_source(config).name(i) for i in range(2)] == held_names
  config.eval.data = "tfds:tiny_restore_images:test"
  assert len(eval_source(config)) == _NUM_GOOD + 1


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build"):
    make_source("tfds:tiny_restore_images:train", tfds_data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="tfds build"):
    make_source("tfds:no_such_dataset_anywhere", tfds_data_dir=str(tmp_path))
