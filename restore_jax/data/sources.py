"""Random-access image sources named by `config.data.source`.

  samples          real colour photographs shipped inside installed packages
                   (scikit-image, and matplotlib / scikit-learn if present),
                   so a fresh machine can train with no download.
  folder:PATH      every image under PATH, recursively, in sorted order.
  tfds:NAME[:SPLIT]  a TFDS dataset already prepared in array_record format.

A source is a sequence of records (a file path, encoded bytes or an array)
that `decode.to_rgb_float` turns into an image, plus `name(i)` for messages.
Records are decoded by the pipeline, not here, so a bad file costs a skip
instead of a crash.

`config.eval.holdout` records of the training source can be kept out of
training for evaluation: `train_source(config)` and `eval_source(config)`
give the two sides, both through `holdout_split`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pathlib
from typing import Any, Protocol, Sequence

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

# Colour photographs in scikit-image's wheel (skimage/data) that need no
# pooch download; others there are gray, synthetic or RGBA clip-art.
_SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                   "motorcycle_left.png", "motorcycle_right.png",
                   "hubble_deep_field.jpg")
_MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)  # mpl-data/sample_data
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")  # datasets/images


class ImageSource(Protocol):
  """What the pipeline needs from a source: random access and a name."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> Any: ...

  def name(self, index: int) -> str: ...


@dataclasses.dataclass(frozen=True)
class FileSource:
  """A fixed, ordered list of image files; records are their paths."""
  paths: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> str:
    return self.paths[index]

  def name(self, index: int) -> str:
    return self.paths[index]


@dataclasses.dataclass(frozen=True)
class SubsetSource:
  """Some records of another source, in its order, under their own names."""
  parent: ImageSource
  indices: tuple[int, ...]

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> Any:
    return self.parent[self.indices[index]]

  def name(self, index: int) -> str:
    return self.parent.name(self.indices[index])


class TfdsSource:
  """Records of one split of a prepared TFDS dataset (array_record files).

  Image features are read undecoded (their PNG/JPEG bytes) so that decoding
  happens in `decode.py`, with the same handling of odd or broken images as
  every other source.
  """

  def __init__(self, name: str, split: str, data_dir: str | None,
               image_key: str | None):
    self._dataset, self._split = name, split
    self._data_dir, self._requested_key = data_dir, image_key
    self._records, self.image_key = _open_tfds(name, split, data_dir, image_key)

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> Any:
    return self._records[int(index)][self.image_key]

  def name(self, index: int) -> str:
    return f"tfds:{self._dataset}:{self._split}[{index}]"

  # Grain worker processes rebuild the reader instead of pickling it.
  def __getstate__(self) -> dict[str, Any]:
    return {"args": (self._dataset, self._split, self._data_dir,
                     self._requested_key)}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(*state["args"])


def make_source(spec: str, *, tfds_data_dir: str | None = None,
                image_key: str | None = None) -> ImageSource:
  """Builds the source named by `spec` ("samples", "folder:PATH", "tfds:...")."""
  kind, _, arg = spec.partition(":")
  if kind == "samples" and not arg:
    return sample_photos()
  if kind == "folder" and arg:
    return image_folder(arg)
  if kind == "tfds" and arg:
    name, _, split = arg.partition(":")
    return TfdsSource(name, split or "train", tfds_data_dir, image_key)
  raise ValueError(f"Unknown data source {spec!r}: use 'samples', "
                   "'folder:PATH' or 'tfds:NAME[:SPLIT]'.")


def holdout_split(source: ImageSource,
                  count: int) -> tuple[ImageSource, ImageSource]:
  """Splits `source` into (training part, `count` held-out records).

  The held-out records are those whose names' last path components have the
  smallest SHA-1 hashes. So the split depends on neither the run's seed nor
  where the folder lives, is an unbiased sample whatever the file naming
  order, and adding a file to a folder moves at most one record across it.
  Both parts keep the source's order and names.
  """
  count = int(count)
  if not 0 <= count < len(source):
    raise ValueError(
        f"Cannot hold out {count} of the {len(source)} records of the data "
        "source: eval.holdout must be at least 0 and leave records to train on "
        "(lower it, or set eval.data to a separate evaluation source).")
  if count == 0:
    return source, SubsetSource(source, ())
  ranked = sorted(range(len(source)), key=lambda i: _holdout_key(source.name(i)))
  held_out = frozenset(ranked[:count])
  train = tuple(i for i in range(len(source)) if i not in held_out)
  return SubsetSource(source, train), SubsetSource(source, tuple(sorted(held_out)))


def _holdout_key(name: str) -> tuple[str, str]:
  """Hash of the location-independent part of a name; ties broken by name."""
  leaf = name.replace("\\", "/").rsplit("/", 1)[-1]
  return hashlib.sha1(leaf.encode("utf-8")).hexdigest(), name


def train_source(config) -> ImageSource:
  """`config.data.source`, less the eval.holdout records when they are used."""
  source = _configured_source(config, config.data.source)
  holdout = _holdout_count(config)
  return holdout_split(source, holdout)[0] if holdout else source


def eval_source(config) -> ImageSource | None:
  """Images to evaluate on: eval.data, else the held-out records, else None."""
  spec = (config.get("eval") or {}).get("data") or ""
  if spec:
    return _configured_source(config, spec)
  holdout = _holdout_count(config)
  if not holdout:
    return None
  return holdout_split(_configured_source(config, config.data.source), holdout)[1]


def _holdout_count(config) -> int:
  """eval.holdout when it applies (no separate eval.data), else 0."""
  eval_config = config.get("eval") or {}
  if eval_config.get("data"):
    return 0
  return int(eval_config.get("holdout") or 0)


def _configured_source(config, spec: str) -> ImageSource:
  return make_source(spec, tfds_data_dir=config.data.get("tfds_data_dir"),
                     image_key=config.data.get("image_key"))


def sample_photos() -> FileSource:
  """Colour photographs found on disk inside installed packages."""
  candidates = []
  for package, subdir, names in (
      ("skimage", "data", _SKIMAGE_PHOTOS),
      ("matplotlib", os.path.join("mpl-data", "sample_data"), _MATPLOTLIB_PHOTOS),
      ("sklearn", os.path.join("datasets", "images"), _SKLEARN_PHOTOS)):
    root = _package_dir(package)
    if root is not None:
      candidates += [os.path.join(root, subdir, n) for n in names]
  paths = tuple(p for p in candidates if os.path.isfile(p))
  if not paths:
    raise FileNotFoundError(
        "data.source='samples' found no sample photographs: install "
        "scikit-image (pip install scikit-image), or use "
        "--config.data.source=folder:PATH with your own images.")
  return FileSource(paths)


def sample_files(config) -> dict[str, str]:
  """{name: SHA-256} of the photographs behind "samples" when the run reads it (as data.source or eval.data),
  else {}: that source is whatever the installed packages ship, so a run records what it found.

  Names are relative to the directory that holds the packages ("skimage/data/astronaut.png"), so the record
  survives a move to another environment with the same packages.
  """
  specs = {config.data.source, (config.get("eval") or {}).get("data") or ""}
  if "samples" not in specs:
    return {}
  files = {}
  for path in sample_photos().paths:
    name = os.path.relpath(path, _packages_root(path)).replace(os.sep, "/")
    with open(path, "rb") as f:
      files[name] = hashlib.sha256(f.read()).hexdigest()
  return files


def _packages_root(path: str) -> str:
  """The directory holding the package a sample file belongs to (its site-packages)."""
  for package in ("skimage", "matplotlib", "sklearn"):
    root = _package_dir(package)
    if root is not None and os.path.commonpath([root, path]) == root:
      return os.path.dirname(root)
  return os.path.dirname(path)


def image_folder(path: str) -> FileSource:
  """Every image file under `path`, recursively, sorted for determinism."""
  root = pathlib.Path(path).expanduser()
  if not root.is_dir():
    raise FileNotFoundError(f"Image folder {str(root)!r} does not exist; check "
                            "data.source='folder:PATH'.")
  paths = tuple(sorted(str(p) for p in root.rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()))
  if not paths:
    raise FileNotFoundError(
        f"Image folder {str(root)!r} holds no images (looked recursively for "
        f"{', '.join(IMAGE_EXTENSIONS)}).")
  return FileSource(paths)


def _package_dir(package: str) -> str | None:
  """Directory of an installed package, without importing it."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    return None
  return list(spec.submodule_search_locations)[0]


def _open_tfds(name: str, split: str, data_dir: str | None,
               image_key: str | None) -> tuple[Sequence[Any], str]:
  """Opens a prepared TFDS split for random access; never downloads."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # Slow import, only when used.

  how_to_prepare = (
      f"Prepare it on a machine with internet access with `tfds build {name} "
      "--file_format=array_record` (then copy the data directory here), and "
      "point --config.data.tfds_data_dir at the directory that holds it.")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(f"TFDS dataset {name!r} is not available in "
                            f"data_dir={data_dir!r} ({e}). {how_to_prepare}") from e
  if not builder.is_prepared():
    raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in "
                            f"{builder.data_dir!r}; nothing is downloaded at run "
                            f"time. {how_to_prepare}")
  if split not in builder.info.splits:
    raise ValueError(f"TFDS dataset {name!r} has no split {split!r}; it has "
                     f"{sorted(builder.info.splits)}.")

  features = builder.info.features
  if image_key is None:
    image_key = "hr" if "hr" in features else "image"
  if image_key not in features:
    raise KeyError(f"TFDS dataset {name!r} has no feature {image_key!r}; set "
                   f"config.data.image_key to one of {sorted(features)}.")
  decoders = None
  if isinstance(features[image_key], tfds.features.Image):
    decoders = {image_key: tfds.decode.SkipDecoding()}
  try:
    records = builder.as_data_source(split=split, decoders=decoders)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"Cannot open TFDS dataset {name!r} split {split!r} for random access "
        f"({e}). It must be prepared with file_format='array_record'. "
        f"{how_to_prepare}") from e
  return records, image_key
