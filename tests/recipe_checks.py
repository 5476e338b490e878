"""Helpers the recipe test modules share: a recipe's config as `--config FILE:VARIANT` loads it, evaluate's
flags as an object, PSNR written out, and a small photo-like test image."""

import importlib.util
import types
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image

from cli import REPO, train

# Both runs of a workdir must agree on every key that shapes the batches; evaluation during training is left to
# the periodic-evaluation tests (it would compile the generator for a whole photograph in each process).
NO_EVAL = "--config.eval.holdout=0"


def train_and_resume(workdir: Path, config: str, *extra: str):
  """A CLI run of 2 steps, then the same command again, which resumes it to the recipe's 4."""
  first = train(workdir, "--config.total_steps=2", NO_EVAL, *extra, config=config)
  again = train(workdir, NO_EVAL, *extra, config=config)
  return first, again


def recipe_config(spec: str) -> ml_collections.ConfigDict:
  """The recipe's config, as `--config FILE:VARIANT` loads it."""
  path, _, variant = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def eval_args(**overrides) -> types.SimpleNamespace:
  """What evaluate's flags hold, for calling evaluate.run in-process."""
  values = dict(workdir=None, baseline=None, config=None, data=None, output=None, no_ema=False, step=None,
                tensorboard=False, crop_border=None, seed=None, ms_ssim=False, max_images=0, tile=0)
  return types.SimpleNamespace(**{**values, **overrides})


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR in dB of two images in [0, 1] on 8-bit levels, written out here."""
  a8, b8 = np.round(np.clip(a, 0, 1) * 255), np.round(np.clip(b, 0, 1) * 255)
  return float(10 * np.log10(255.0**2 / np.mean((a8 - b8) ** 2)))


def photo(shape: tuple[int, int], seed: int) -> np.ndarray:
  """A smooth random colour image (uint8) with fine texture: structure a photo has, at test size."""
  rng = np.random.default_rng(seed)
  small = rng.random((4, 4, 3))
  big = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize(shape[::-1], Image.BICUBIC))
  return np.clip(big.astype(np.float64) + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def clean_folder(folder: Path, count: int = 1) -> Path:
  """`count` test photos of 40 x 48 pixels saved as PNGs in `folder`."""
  for i in range(count):
    Image.fromarray(photo((40, 48), i)).save(folder / f"photo{i}.png")
  return folder
