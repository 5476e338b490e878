"""The loss ablation of the write-up "Image Restoration Using Generative Adversarial Networks" (its PSNR table on
5x5 pixel-shuffle grain, rows = loss variants, columns = high / low distortion), rerun at demo scale.

Each of the four variants is trained with configs/degrain_patchgan.py:demo at both presets (8 runs, one after the
other), evaluated on CSet14 (never trained on) with `python -m restore_jax.evaluate`, and the table is rewritten
after every run, so an interrupted ablation keeps its finished rows (missing cells read "not run"). Runs live in
folders named by preset, variant and step count, and reports by the data they score: a run whose report for the
same steps and data exists is not trained again, and one interrupted mid-training resumes from its checkpoint.

  python benchmarks/ablate_degrain.py --steps 1000 --data folder:../shared/data/CSet14 \
      --runs runs/ablate_degrain_1000 --output benchmarks/ablate_degrain.md

The source's numbers are on its own Public Figures faces at full scale, ours on CSet14 after `--steps` steps of
the demo's small U-Net: compare orderings, not values.
"""

import argparse
import json
import os
import pathlib
import re
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "configs/degrain_patchgan.py:demo"
PRESETS = ("high", "low")
GAN_NEVER = "--config.loss.adversarial_start_step=1000000000"  # Reconstruction alone: the GAN never joins.
# (row label, overrides of the recipe's loss). The recipe mixes 0.16 L1 + 0.84 MS-SSIM (Zhao et al. 2017,
# section 3.3) + 0.5 cosine + 0.01 vanilla GAN; a variant leaves terms out, L1 alone keeps weight 1.
VARIANTS = (
    ("L1 + adversarial", ["--config.loss.terms.l1=1.0", "--config.loss.terms.ms_ssim=0.0",
                          "--config.loss.terms.cosine=0.0"]),
    ("L1 + MS-SSIM + adversarial", ["--config.loss.terms.cosine=0.0"]),
    ("L1 + MS-SSIM + cosine + adversarial", []),
    ("L1 + MS-SSIM + cosine (no adversarial)", [GAN_NEVER]),
)
# The write-up's PSNR (dB) on its faces, (high, low), in the order of VARIANTS.
SOURCE = ((31.66, 34.93), (34.30, 37.47), (37.68, 40.67), (35.67, 36.55))


def slug(label: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def child_cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def run_one(args: argparse.Namespace, preset: str, label: str, overrides: list[str]) -> dict:
  """Trains one variant at one preset (unless its report exists) and returns its CSet14 report."""
  workdir = pathlib.Path(args.runs).resolve() / f"{preset}_{slug(label)}_{args.steps}steps"
  report_path = workdir / f"report_{slug(args.data)}.json"
  if report_path.exists():
    report = json.loads(report_path.read_text())
    if report.get("step") == args.steps:
      return report
    print(f"{report_path} scores step {report.get('step')}, not {args.steps}: evaluating again.")
  start_cpu, start = child_cpu_seconds(), time.time()
  subprocess.run([sys.executable, "-m", "restore_jax.main", "--config", CONFIG, "--workdir", str(workdir),
                  f"--config.total_steps={args.steps}", f"--config.degradation.preset={preset}",
                  f"--config.eval_every={args.steps}", f"--config.checkpoint_every={args.steps}", *overrides],
                 check=True, cwd=REPO)
  train_cpu, train_wall = child_cpu_seconds() - start_cpu, time.time() - start
  subprocess.run([sys.executable, "-m", "restore_jax.evaluate", "--workdir", str(workdir), "--data", args.data,
                  "--output", str(report_path)], check=True, cwd=REPO)
  report = json.loads(report_path.read_text())
  report["train_cpu_s"], report["train_wall_s"] = train_cpu, train_wall
  report_path.write_text(json.dumps(report, indent=2) + "\n")
  return report


def baseline(args: argparse.Namespace, preset: str, name: str) -> dict:
  path = pathlib.Path(args.runs).resolve() / f"{preset}_baseline_{name}_{slug(args.data)}.json"
  if not path.exists():
    subprocess.run([sys.executable, "-m", "restore_jax.evaluate", "--baseline", name, "--config", CONFIG,
                    f"--config.degradation.preset={preset}", "--data", args.data, "--output", str(path)],
                   check=True, cwd=REPO)
  return json.loads(path.read_text())


def table(args: argparse.Namespace, results: dict, baselines: dict) -> str:
  def cell(preset: str, key: str, metric: str) -> str:
    report = results.get((preset, key)) or baselines.get((preset, key))
    return f"{report['mean'][metric]:.2f}" if report else "not run"

  def ssim(preset: str, key: str) -> str:
    report = results.get((preset, key)) or baselines.get((preset, key))
    return f"{report['mean']['ssim_rgb']:.4f}" if report else "not run"

  scored_on = ("CSet14 (14 photographs never trained on" if "CSet14" in args.data
               else f"`{args.data}` (photographs never trained on")
  lines = [
      "# Loss ablation on pixel-shuffle grain",
      "",
      'The PSNR table of the write-up "Image Restoration Using Generative Adversarial Networks" (5x5 pixel-shuffle',
      "grain on Public Figures faces, full-scale training), beside the same four loss variants trained with",
      f"`{CONFIG}` for {args.steps} steps each (batch 8, 48 px crops, the demo's 0.26 M-parameter U-Net and",
      f"PatchGAN) and scored on {scored_on}; RGB, no border cropped). Made by:",
      "",
      "```",
      f"python benchmarks/ablate_degrain.py --steps {args.steps} --data {args.data} --runs {args.runs} "
      f"--output {args.output}",
      "```",
      "",
      "| loss | ours high PSNR | ours low PSNR | ours high SSIM | ours low SSIM | source high PSNR | source low PSNR |",
      "| --- | --- | --- | --- | --- | --- | --- |",
  ]
  for (label, _), (src_high, src_low) in zip(VARIANTS, SOURCE):
    lines.append(f"| {label} | {cell('high', label, 'psnr_rgb')} | {cell('low', label, 'psnr_rgb')} | "
                 f"{ssim('high', label)} | {ssim('low', label)} | {src_high:.2f} | {src_low:.2f} |")
  for name in ("identity", "median"):
    label = {"identity": "the grainy input itself", "median": "3x3 median filter"}[name]
    lines.append(f"| baseline: {label} | {cell('high', name, 'psnr_rgb')} | {cell('low', name, 'psnr_rgb')} | "
                 f"{ssim('high', name)} | {ssim('low', name)} | | |")
  cpu = sum(r.get("train_cpu_s", 0.0) for r in results.values())
  lines += ["", f"Training CPU time (user + sys) over the {len(results)} runs: {cpu:.0f} s "
                f"(~{cpu / 2 / 60:.0f} min of an idle 2-core machine).", ""]
  return "\n".join(lines)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=1000, help="Training steps of every run.")
  parser.add_argument("--data", default="folder:../shared/data/CSet14", help="Held-out clean photos.")
  parser.add_argument("--runs", default="runs/ablate_degrain", help="Folder of the 8 training runs.")
  parser.add_argument("--output", default="benchmarks/ablate_degrain.md", help="The markdown table to write.")
  args = parser.parse_args()
  os.makedirs(args.runs, exist_ok=True)

  baselines = {(p, n): baseline(args, p, n) for p in PRESETS for n in ("identity", "median")}
  results = {}
  for preset in PRESETS:
    for label, overrides in VARIANTS:
      results[(preset, label)] = run_one(args, preset, label, overrides)
      pathlib.Path(args.output).write_text(table(args, results, baselines))
      print(f"{preset} / {label}: {results[(preset, label)]['mean']['psnr_rgb']:.2f} dB", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
