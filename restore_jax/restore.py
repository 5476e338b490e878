"""Restore images with a trained generator: one file or a whole folder, any size, format and mode.

  python -m restore_jax.restore --workdir DIR --input FILE_OR_DIR --output FILE_OR_DIR \
      [--mask FILE_OR_DIR] [--tile 512 --tile-overlap 32] [--self-ensemble] [--no-ema] [--step N|best] [--batch N]

Large images are restored in tiles blended without seams (restore_jax.tiling), so memory depends on the tile
size, not the image's; every file is written back in its own format and mode (restore_jax.image_io). A folder is
restored into a folder that mirrors its sub-folders. Files that cannot be read are skipped with a warning and
counted. Flags take dashes or underscores (--tile-overlap or --tile_overlap).

What the generator is given follows the run's task: a model trained on gray inputs (colorization) gets the
photo's BT.601 luma and its output is written in colour; a model that fills missing pixels (inpainting) gets a
mask beside the photo: from --mask (a file, or a folder mirroring --input; white = missing), or else the photo's
pure-white and transparent pixels.
"""

import argparse
import dataclasses
import functools
import importlib.util
import pathlib
import sys
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from absl import logging

from restore_jax import image_io, inference, tiling
from restore_jax import task as task_lib
from restore_jax.data.sources import IMAGE_EXTENSIONS
from restore_jax.degradations import Degradation, make_degradation

DEFAULT_TILE = 512  # Input pixels: a 512x512 RRDB tile at x4 fits comfortably in a GPU's memory.
DEFAULT_OVERLAP = 32  # Input pixels shared by neighbouring tiles, cross-faded over their middle half.
_OUT_DTYPES = {8: np.uint8, 16: np.uint16, 32: np.float32}  # Bits per sample -> restored array's dtype.


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m restore_jax.restore", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="A training run's directory (config.json + checkpoints).")
  parser.add_argument("--input", required=True, help="An image file, or a folder searched recursively.")
  parser.add_argument("--output", required=True,
                      help="For a file: the output file, or an existing folder to write it into. For a folder: the "
                           "output folder (created; sub-folders mirrored). Never the input.")
  parser.add_argument("--mask", default=None,
                      help="For models that fill missing pixels: a mask image (white = missing), or a folder of "
                           "masks mirroring --input. Default: the photo's pure-white and transparent pixels.")
  parser.add_argument("--tile", type=int, default=DEFAULT_TILE,
                      help="Tile side in input pixels; 0 restores each image whole (default %(default)s).")
  parser.add_argument("--tile-overlap", "--tile_overlap", dest="tile_overlap", type=int, default=DEFAULT_OVERLAP,
                      help="Input pixels shared by neighbouring tiles (default %(default)s).")
  parser.add_argument("--batch", type=int, default=1, help="Tiles per network call (default %(default)s).")
  parser.add_argument("--self-ensemble", "--self_ensemble", dest="self_ensemble", action="store_true",
                      help="Average the outputs of the 8 flips/rotations of each tile (8x slower).")
  parser.add_argument("--no-ema", "--no_ema", dest="no_ema", action="store_true",
                      help="Use the raw generator weights instead of their moving average.")
  parser.add_argument("--step", default=None,
                      help="Checkpoint to use: a step number, or 'best' (default: the newest good one).")
  parser.add_argument("--interpolate", type=float, default=None, metavar="ALPHA",
                      help="ESRGAN's network interpolation: restore with (1 - ALPHA) x the weights the run started "
                           "from (its generator.init_from, the PSNR model) + ALPHA x its own; 0 <= ALPHA <= 1.")
  args = parser.parse_args(argv)
  if args.interpolate is not None and not 0.0 <= args.interpolate <= 1.0:
    parser.error(f"--interpolate takes an ALPHA in [0, 1], got {args.interpolate}.")
  if args.tile < 0 or args.batch < 1:
    parser.error(f"--tile must be >= 0 and --batch >= 1 (got --tile {args.tile}, --batch {args.batch}).")
  if args.tile > 0 and not 0 <= args.tile_overlap < args.tile:
    parser.error(f"--tile-overlap must be at least 0 and less than --tile (got {args.tile_overlap} "
                 f"with --tile {args.tile}).")
  if args.step is not None and args.step != "best":
    try:
      args.step = int(args.step)
    except ValueError:
      parser.error(f"--step takes a step number or 'best', got {args.step!r}.")
  return args


def plan(input_path: pathlib.Path, output_path: pathlib.Path) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """(source, destination) for every image to restore; refuses any plan that would overwrite an input."""
  if not input_path.exists():
    raise ValueError(f"--input {input_path} does not exist.")
  if input_path.resolve() == output_path.resolve():
    raise ValueError(f"--output is the same as --input ({input_path}); restoring in place would overwrite the "
                     f"originals. Give another --output.")
  if input_path.is_dir():
    if output_path.exists() and not output_path.is_dir():
      raise ValueError(f"--input {input_path} is a folder, so --output must be a folder; {output_path} is a file.")
    out_root = output_path.resolve()
    sources = sorted(p for p in input_path.rglob("*")
                     if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                     and not p.resolve().is_relative_to(out_root))  # An output folder inside the input is not input.
    if not sources:
      raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {input_path}.")
    pairs = [(p, output_path / p.relative_to(input_path)) for p in sources]
  else:
    destination = output_path / input_path.name if output_path.is_dir() else output_path
    pairs = [(input_path, destination)]
  for source, destination in pairs:
    if destination.resolve() == source.resolve():
      raise ValueError(f"Writing {destination} would overwrite its input; give another --output.")
  return pairs


def make_restore_fn(apply_fn: tiling.ApplyFn, *, scale: int, tile: int, overlap: int, batch: int = 1,
                    self_ensemble: bool = False) -> Callable[[np.ndarray, np.dtype], np.ndarray]:
  """(HWC float image, output dtype) -> restored HWC image, tiled, optionally self-ensembled."""
  if self_ensemble:
    apply_fn = tiling.self_ensemble(apply_fn)

  def restore_image(image: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    return tiling.restore_tiled(apply_fn, image, scale=scale, tile=tile, overlap=overlap, batch=batch,
                                out_dtype=out_dtype)

  return restore_image


def read_mask(path: pathlib.Path, shape: tuple[int, int]) -> np.ndarray:
  """A mask file (white or any bright value = missing) as (H, W) float, checked against the photo's size."""
  mask, _ = image_io.read_image(path)
  if mask.shape[:2] != shape:
    raise image_io.ImageReadError(f"The mask {path} is {mask.shape[1]}x{mask.shape[0]}, but the photo is "
                                  f"{shape[1]}x{shape[0]}.")
  return (mask.mean(axis=-1) >= 0.5).astype(np.float32)


def photo_input(image: np.ndarray, info: image_io.ImageInfo, task: task_lib.Task, degradation: Degradation,
                mask_path: pathlib.Path | None) -> tuple[np.ndarray, image_io.ImageInfo]:
  """(what the generator takes for this photo, how to write its output).

  The run's degradation turns a real photo into the kind of input it was trained on without damaging it
  (`Degradation.prepare`): the luma for a gray-input task, the photo with its mask of missing pixels for a task
  that fills them. The mask comes from --mask, or else is the photo's pure-white pixels (found by the
  degradation) together with its transparent ones. A colorizer's output is written in colour; filled pixels are
  written opaque.
  """
  mask = None
  if task.use_mask:
    if mask_path is not None:
      mask = read_mask(mask_path, image.shape[:2])
    elif info.alpha is not None:
      white = degradation.prepare(image)["mask"][..., 0]
      mask = np.maximum(white, (info.alpha < 0.5).astype(np.float32))
    info = dataclasses.replace(info, alpha=None)
  example = degradation.prepare(image, mask) if task.use_mask else degradation.prepare(image)
  if task.in_channels < task.out_channels:
    info = dataclasses.replace(info, gray=False)
  return task_lib.generator_input(example["input"], example.get("mask"), task), info


def restore_files(pairs: Sequence[tuple[pathlib.Path, pathlib.Path]],
                  restore_image: Callable[[np.ndarray, np.dtype], np.ndarray], task: task_lib.Task,
                  degradation: Degradation, masks: dict[pathlib.Path, pathlib.Path] | None = None
                  ) -> list[tuple[pathlib.Path, str]]:
  """Restores every (source, destination) pair; returns the (source, reason) of those that could not be read."""
  skipped = []
  for source, destination in _progress(pairs):
    try:
      image, info = image_io.read_image(source)
      x, info = photo_input(image, info, task, degradation, (masks or {}).get(source))
    except ValueError as e:  # Not an image (ImageReadError), or a mask that does not fit it.
      logging.warning("Skipping %s: %s", source, e)
      skipped.append((source, str(e)))
      continue
    start = time.perf_counter()
    restored = restore_image(x, _OUT_DTYPES[info.bits])
    destination.parent.mkdir(parents=True, exist_ok=True)
    image_io.write_image(destination, restored, info)
    if len(pairs) == 1 or not _has_tqdm():
      h, w = image.shape[:2]
      print(f"{source} ({w}x{h}, {info.mode}) -> {destination} ({restored.shape[1]}x{restored.shape[0]}) "
            f"in {time.perf_counter() - start:.1f} s", flush=True)
    del image, x, restored  # Before the next read: one image's arrays at a time.
  return skipped


def mask_paths(pairs: Sequence[tuple[pathlib.Path, pathlib.Path]], input_path: pathlib.Path, mask: str | None
               ) -> dict[pathlib.Path, pathlib.Path] | None:
  """--mask as {photo: its mask file}: one file for one photo, or a folder mirroring the input folder."""
  if mask is None:
    return None
  mask_path = pathlib.Path(mask)
  if not mask_path.exists():
    raise ValueError(f"--mask {mask_path} does not exist.")
  if mask_path.is_file():
    if len(pairs) != 1:
      raise ValueError("--mask is a file, but --input holds several images; give a folder of masks mirroring it.")
    return {pairs[0][0]: mask_path}
  found = {}
  for source, _ in pairs:
    relative = source.relative_to(input_path) if input_path.is_dir() else pathlib.Path(source.name)
    candidates = sorted(mask_path.glob(str(relative.with_suffix(".*"))))
    if not candidates:
      raise ValueError(f"No mask for {source} in {mask_path} (looked for {relative.with_suffix('.*')}).")
    found[source] = candidates[0]
  return found


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    pairs = plan(pathlib.Path(args.input), pathlib.Path(args.output))
    masks = mask_paths(pairs, pathlib.Path(args.input), args.mask)
    generator = inference.load_generator(args.workdir, use_ema=not args.no_ema, step=args.step)
    if args.interpolate is not None:
      generator = inference.interpolate_with_start(generator, args.interpolate)
  except ValueError as e:  # Includes inference.NoCheckpoint.
    print(f"error: {e}", file=sys.stderr)
    return 2
  weights = "raw" if args.no_ema else "EMA"
  if args.interpolate is not None:
    weights += f" (interpolated, alpha {args.interpolate:g}, with its generator.init_from)"
  print(f"Restoring {len(pairs)} image(s) with the {weights} generator of step {generator.step} from "
        f"{args.workdir} (x{generator.scale}, tile {args.tile or 'off'}, overlap {args.tile_overlap}"
        f"{', self-ensemble x8' if args.self_ensemble else ''}).", flush=True)
  apply_fn = functools.partial(inference.make_apply(generator.module), generator.variables)
  restore_image = make_restore_fn(apply_fn, scale=generator.scale, tile=args.tile, overlap=args.tile_overlap,
                            batch=args.batch, self_ensemble=args.self_ensemble)
  degradation = make_degradation(generator.config.degradation)  # What the model was trained to undo.
  skipped = restore_files(pairs, restore_image, generator.task, degradation, masks)
  print(f"Restored {len(pairs) - len(skipped)} of {len(pairs)} image(s) into {args.output}.", flush=True)
  if skipped:
    print(f"Skipped {len(skipped)} unreadable file(s):", file=sys.stderr)
    for source, reason in skipped:
      print(f"  {source}: {reason}", file=sys.stderr)
  return 1 if len(skipped) == len(pairs) else 0


def _has_tqdm() -> bool:
  return importlib.util.find_spec("tqdm") is not None


def _progress(pairs: Sequence[tuple[pathlib.Path, pathlib.Path]]) -> Iterable[tuple[pathlib.Path, pathlib.Path]]:
  """A progress bar over a folder when tqdm is installed; the caller prints one line per image otherwise."""
  if len(pairs) == 1 or not _has_tqdm():
    return pairs
  import tqdm  # pylint: disable=g-import-not-at-top  # Optional dependency.

  return tqdm.tqdm(pairs, desc="restore", unit="image", file=sys.stderr)


if __name__ == "__main__":
  sys.exit(main())
