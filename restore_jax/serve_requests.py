"""What the web page does with one request: check the upload, restore it with a loaded run, write the results.

No web framework here, so every rule (pixel limit, unreadable files, runs that fail to load, one compilation per
size bucket) is a plain function a test can call. restore_jax.serve_app puts a page around it.
"""

import dataclasses
import pathlib
import threading
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import logging
from PIL import Image

from restore_jax import image_io, inference, restore, tiling
from restore_jax.degradations import make_degradation

DEFAULT_MAX_PIXELS = 4_000_000  # Input pixels (a 2000x2000 photo): x4 gives a 64-megapixel output.
BUCKET = 64  # Image sides are padded up to a multiple of this, so photos of similar sizes share one compilation.

ProgressFn = Callable[[int, int], None]  # (tiles done, tiles in all) -> None.


class RequestError(ValueError):
  """A request the server refuses with a message for the person who made it (never a stack trace)."""


@dataclasses.dataclass
class Model:
  """One --workdir: its name in the model list, and the loaded generator or why it could not be loaded."""

  name: str
  workdir: str
  generator: inference.LoadedGenerator | None = None
  error: str | None = None
  apply: "BucketedApply | None" = None


def model_name(generator: inference.LoadedGenerator) -> str:
  """'<recipe> step N (<degradation>, xS)': what was trained, how long, for which damage, at which scale."""
  config = generator.config
  recipe = config.get("recipe") or "run"
  damage = (config.get("degradation") or {}).get("name", "restoration")
  return f"{recipe} step {generator.step} ({damage}, x{generator.scale})"


def load_models(workdirs: Sequence[str]) -> list[Model]:
  """Loads every workdir's generator; one that fails is kept with its error, so the page can say why."""
  models = []
  for workdir in workdirs:
    try:
      generator = inference.load_generator(workdir)
    except Exception as e:  # pylint: disable=broad-except  # Any failure is shown on the page, not raised.
      logging.warning("Cannot load the run in %s: %s", workdir, e)
      models.append(Model(name=f"{workdir} (cannot be loaded)", workdir=workdir,
                          error=f"The model in {workdir} cannot be loaded: {e}"))
      continue
    name = model_name(generator)
    if any(m.name == name for m in models):
      name = f"{name} [{workdir}]"
    models.append(Model(name=name, workdir=workdir, generator=generator,
                        apply=BucketedApply(inference.make_apply(generator.module), generator.variables)))
  return models


class BucketedApply:
  """The generator on NHWC batches, each side edge-padded up to a multiple of `bucket` and the output cropped.

  The jitted network compiles once per input shape; padding to buckets makes a 300x200 photo and a 310x190 one
  the same shape, so the second is restored without compiling. `shapes` records the padded shapes seen.
  """

  def __init__(self, apply_fn: Callable, variables, bucket: int = BUCKET):
    self._apply, self._variables, self.bucket = apply_fn, variables, bucket
    self.shapes: set[tuple[int, ...]] = set()

  def __call__(self, images: np.ndarray) -> np.ndarray:
    _, height, width, _ = images.shape
    pad_h, pad_w = -height % self.bucket, -width % self.bucket
    padded = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    self.shapes.add(padded.shape)
    restored = np.asarray(jax.device_get(self._apply(self._variables, padded)))
    scale = restored.shape[1] // padded.shape[1]
    return restored[:, :height * scale, :width * scale]


@dataclasses.dataclass(frozen=True)
class Result:
  before: pathlib.Path  # The input, resized to the output's size (PNG): the slider's left side.
  after: pathlib.Path  # The restored image in the input's format: the slider's right side and the download.
  size: tuple[int, int]  # (width, height) of the restored image.
  seconds: float  # Time spent restoring (reading and writing excluded).

  def summary(self) -> str:
    return f"{self.size[0]}x{self.size[1]} px, restored in {self.seconds:.1f} s"


def check_photo(path: str | pathlib.Path, max_pixels: int) -> tuple[int, int]:
  """(width, height) of an upload, refusing a file that is not an image or has more than `max_pixels` pixels.

  Reads the header only, so an oversized photo is refused before it is decoded.
  """
  try:
    with Image.open(path) as image:
      width, height = image.size
  except Exception as e:  # pylint: disable=broad-except  # Pillow raises several types for a non-image.
    raise RequestError(f"{pathlib.Path(path).name} is not an image this server can read ({e}).") from e
  if width * height > max_pixels:
    raise RequestError(f"The photo is {width}x{height} = {width * height / 1e6:.1f} megapixels; this server takes "
                       f"at most {max_pixels / 1e6:.1f} megapixels (--max-pixels). Make it smaller and try again.")
  return width, height


class Restorer:
  """Restores uploads with the loaded models, one request at a time (the page also queues them)."""

  def __init__(self, models: Sequence[Model], out_dir: str | pathlib.Path, *,
               max_pixels: int = DEFAULT_MAX_PIXELS, tile_overlap: int = restore.DEFAULT_OVERLAP):
    self.models = {m.name: m for m in models}
    self.out_dir = pathlib.Path(out_dir)
    self.max_pixels, self.tile_overlap = max_pixels, tile_overlap
    self._lock = threading.Lock()  # One restoration in memory at a time, however the caller schedules them.
    self._count = 0

  def model(self, name: str) -> Model:
    if name not in self.models:
      raise RequestError(f"Unknown model {name!r}; choose one of: {', '.join(self.models)}.")
    model = self.models[name]
    if model.error is not None:
      raise RequestError(model.error)
    return model

  def __call__(self, model_name_: str, photo: str | pathlib.Path | None, mask: str | pathlib.Path | None = None,
               *, tile: int = restore.DEFAULT_TILE, self_ensemble: bool = False,
               progress: ProgressFn | None = None) -> Result:
    """Restores the photo file with the named model; RequestError says what is wrong with a bad request."""
    if photo is None:
      raise RequestError("Upload a photo first (or pick one of the examples).")
    if tile < 0:
      raise RequestError(f"The tile size must be 0 (whole image) or a positive number of pixels, got {tile}.")
    model = self.model(model_name_)
    generator = model.generator
    check_photo(photo, self.max_pixels)
    try:
      image, info = image_io.read_image(photo)
    except image_io.ImageReadError as e:
      raise RequestError(f"{pathlib.Path(photo).name} is not an image this server can read ({e}).") from e
    mask_path = pathlib.Path(mask) if mask is not None and generator.task.use_mask else None
    degradation = make_degradation(generator.config.degradation)
    try:
      x, info = restore.photo_input(image, info, generator.task, degradation, mask_path)
    except ValueError as e:  # A mask that is not an image or does not fit the photo.
      raise RequestError(str(e)) from e
    overlap = min(self.tile_overlap, max(tile - 1, 0))
    apply_fn = _counting(model.apply, _tile_count(x.shape[:2], tile, overlap) * (8 if self_ensemble else 1),
                         progress)
    restore_image = restore.make_restore_fn(apply_fn, scale=generator.scale, tile=tile, overlap=overlap,
                                            self_ensemble=self_ensemble)
    with self._lock:
      start = time.perf_counter()
      restored = restore_image(x, np.float32)
      seconds = time.perf_counter() - start
      self._count += 1
      stem = f"{self._count:06d}_{pathlib.Path(photo).stem}"
    directory = self.out_dir / stem
    directory.mkdir(parents=True, exist_ok=True)
    suffix = pathlib.Path(photo).suffix or ".png"
    after = directory / f"{pathlib.Path(photo).stem}_restored{suffix}"
    image_io.write_image(after, restored, info)
    before = directory / "before.png"
    height, width = restored.shape[:2]
    levels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(levels).resize((width, height), Image.Resampling.BICUBIC).save(before)
    logging.info("request: model=%r input=%dx%d output=%dx%d tile=%d self_ensemble=%s time=%.2fs",
                 model.name, image.shape[1], image.shape[0], width, height, tile, self_ensemble, seconds)
    return Result(before=before, after=after, size=(width, height), seconds=seconds)


def _tile_count(size: tuple[int, int], tile: int, overlap: int) -> int:
  """Network calls restore_tiled makes for an image of `size` (one per tile, or one for the whole image)."""
  if tile == 0:
    return 1
  tile_h, tile_w = tiling.tile_shape(*size, tile)
  padded_h, padded_w = max(size[0], tile_h), max(size[1], tile_w)
  return len(tiling.tile_starts(padded_h, tile_h, overlap)) * len(tiling.tile_starts(padded_w, tile_w, overlap))


def _counting(apply_fn: Callable, total: int, progress: ProgressFn | None) -> Callable:
  """apply_fn, reporting (calls done, total) after each call."""
  done = 0

  def counted(images: np.ndarray) -> np.ndarray:
    nonlocal done
    restored = apply_fn(images)
    done += 1
    if progress is not None:
      progress(min(done, total), total)
    return restored

  return counted
