"""Before | after pictures for the recipe pages: a clean photo degraded with a run's own degradation, restored
with `python -m restore_jax.restore`, and written side by side as input | restored | clean.

  python docs/images/make_before_after.py --workdir runs/NAME --clean /path/to/photo.png \
      --output docs/images/NAME.png [--crop 160] [--seed 0] [--mask] [--step N]

Every panel has the clean photo's size: a super-resolution input, smaller by the scale, is shown enlarged by
pixel repetition (nearest neighbour), so that its pixels stay visible. --crop keeps a centred square of that many
pixels so that the PNG stays small; --mask also passes the degradation's mask (inpainting) to restore.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # This checkout's restore_jax, here and in the restore command.
from restore_jax import inference  # pylint: disable=g-import-not-at-top,wrong-import-position
from restore_jax.degradations import make_degradation


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The centred size x size square (the whole side where the image is smaller)."""
  height, width = image.shape[:2]
  top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
  return image[top:top + size, left:left + size]


def to_uint8(image: np.ndarray) -> np.ndarray:
  return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="The trained run: its config.json holds the degradation.")
  parser.add_argument("--clean", required=True, help="A clean photograph, never trained on.")
  parser.add_argument("--output", required=True, help="The side-by-side PNG to write.")
  parser.add_argument("--crop", type=int, default=160, help="Side of the centred square kept (0 = whole photo).")
  parser.add_argument("--seed", type=int, default=0, help="Seeds the degradation.")
  parser.add_argument("--mask", action="store_true", help="Pass the degradation's mask to restore (inpainting).")
  parser.add_argument("--step", type=int, help="Restore with this checkpoint step (default: the newest).")
  args = parser.parse_args(argv)

  config = inference.load_config(args.workdir)
  with Image.open(args.clean) as image:
    clean = np.asarray(image.convert("RGB"), np.float32) / 255.0
  if args.crop:
    clean = centre_crop(clean, args.crop)
  example = make_degradation(config.degradation)(clean, np.random.default_rng(args.seed))
  degraded = to_uint8(example["input"])
  scale = clean.shape[0] // degraded.shape[0]
  if (degraded.shape[0] * scale, degraded.shape[1] * scale) != clean.shape[:2]:
    raise ValueError(f"The degraded photo is {degraded.shape[:2]}, the clean one {clean.shape[:2]}: not one scale "
                     "apart. Pass a --crop that the recipe's scale divides.")

  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    Image.fromarray(degraded.squeeze()).save(tmp / "input.png")
    command = [sys.executable, "-m", "restore_jax.restore", "--workdir", str(pathlib.Path(args.workdir).resolve()),
               "--input",
               str(tmp / "input.png"), "--output", str(tmp / "restored.png")]
    if args.step is not None:
      command += ["--step", str(args.step)]
    if args.mask and "mask" in example:
      Image.fromarray(to_uint8(example["mask"][..., 0])).save(tmp / "mask.png")
      command += ["--mask", str(tmp / "mask.png")]
    subprocess.run(command, check=True, cwd=REPO)
    with Image.open(tmp / "restored.png") as image:
      restored = np.asarray(image.convert("RGB"))

  shown = Image.fromarray(degraded.squeeze()).convert("RGB")
  if scale > 1:
    shown = shown.resize((clean.shape[1], clean.shape[0]), Image.NEAREST)
  panels = [np.asarray(shown), restored, to_uint8(clean)]
  gap = np.full((clean.shape[0], 4, 3), 255, np.uint8)  # A white line between the panels.
  side_by_side = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
  Image.fromarray(side_by_side).save(args.output, optimize=True)
  print(f"Wrote {args.output}: input | restored | clean, {side_by_side.shape[1]} x {side_by_side.shape[0]} px")
  return 0


if __name__ == "__main__":
  sys.exit(main())
