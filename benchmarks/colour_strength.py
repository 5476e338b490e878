"""How confident is a colorization model's colour? Scores its output blended back towards the gray input.

For each strength s the image scored is gray + s * (colorized - gray): s = 0 is the gray input, s = 1 the model's
output, values between keep the model's hue and lower its saturation. If some s < 1 scores better than both ends,
the model knows something about the colours (it beats gray) but paints them more strongly than the evidence
supports: the signature of an L1 or adversarial objective, which picks one plausible colour where the squared
error that PSNR measures would be lowest at their average (Zhang et al. 2016, "Colorful Image Colorization",
discuss the same pull between vivid and averaged colours). The blend is a diagnostic, scored on the
evaluation photos themselves; it is not a setting tuned for the recipe.

  python benchmarks/colour_strength.py --workdir runs/colorize_pix2pix --step 500 \
      --data folder:../shared/data/CSet14 --output benchmarks/results/colour_strength_500.md
"""

import argparse
import pathlib
import sys

import numpy as np

from restore_jax import evaluate


def blended_scores(workdir: str, step: int | None, data: str, strengths: list[float]) -> dict[float, dict[str, float]]:
  """{strength: mean PSNR / SSIM (RGB) over the photos}, scored as `restore_jax.evaluate` scores."""
  config, restore_fn, _ = evaluate.evaluate_model(workdir, use_ema=True, step=step)
  if not (config.task.in_channels == 1 and config.task.out_channels == 3):
    raise SystemExit(f"{workdir} is not a colorization run (task.in_channels 1, task.out_channels 3).")
  pairs = evaluate.load_pairs(data, config, seed=int(config.eval.seed))
  rows: dict[float, list[dict[str, float]]] = {s: [] for s in strengths}
  for pair in pairs:
    gray = np.repeat(pair.degraded, 3, axis=-1)
    colour = restore_fn(pair.degraded)
    for s in strengths:
      blended = np.clip(gray + s * (colour - gray), 0.0, 1.0)
      rows[s].append(evaluate.image_metrics(blended, pair.clean, crop_border=0, families=("psnr", "ssim")))
  return {s: {k: float(np.mean([r[k] for r in rs])) for k in ("psnr_rgb", "ssim_rgb")} for s, rs in rows.items()}


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=None, help="Checkpoint (default: the newest).")
  parser.add_argument("--data", required=True, help="Clean photos, e.g. folder:../shared/data/CSet14.")
  parser.add_argument("--strengths", default="0,0.25,0.5,0.75,1")
  parser.add_argument("--output", default=None, help="Also write the table here (markdown).")
  args = parser.parse_args(argv)
  strengths = [float(s) for s in args.strengths.split(",")]
  scores = blended_scores(args.workdir, args.step, args.data, strengths)
  lines = ["| strength | PSNR RGB (dB) | SSIM RGB |", "| --- | --- | --- |"]
  lines += [f"| {s:g}{' (gray)' if s == 0 else ' (the model)' if s == 1 else ''} | {v['psnr_rgb']:.2f} | "
            f"{v['ssim_rgb']:.4f} |" for s, v in scores.items()]
  command = " ".join(["python", "benchmarks/colour_strength.py", *argv])
  text = "\n".join([f"Colour strength of {args.workdir} (step {args.step or 'newest'}) on {args.data}:", "",
                    *lines, "", f"Made by `{command}`.", ""])
  print(text)
  if args.output:
    pathlib.Path(args.output).write_text(text)


if __name__ == "__main__":
  main(sys.argv[1:])
