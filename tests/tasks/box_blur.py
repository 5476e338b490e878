"""A throw-away task, added the way README's "Add a task" says: this file alone, nothing in restore_jax changed.

It is both the recipe (`get_config`) and the module that registers its degradation (named in `config.imports`,
so training, evaluation and restoration import it). The damage: every pixel replaced by the mean of the 2x2 block
it starts (edges repeated). The networks: a tiny pix2pix U-Net and a conditional PatchGAN with batch norm, trained
with L1 + MS-SSIM + cosine + the vanilla GAN objective and mismatched pairs.
"""

import ml_collections
import numpy as np

from configs import common
from restore_jax import degradations


@degradations.register("box_blur_2x2")
class BoxBlur2x2(degradations.Degradation):
  """The mean of each pixel's 2x2 block (no options, no randomness)."""

  def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng  # Deterministic.
    padded = np.pad(img, ((0, 1), (0, 1), (0, 0)), mode="edge")
    return ((padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]) / 4).astype(np.float32)


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.recipe = "box_blur"
  c.imports = ("box_blur",)
  c.task.update(scale=1, in_channels=3, out_channels=3, baseline="identity")
  c.degradation = ml_collections.ConfigDict({"name": "box_blur_2x2"})
  c.total_steps, c.batch_size, c.log_every, c.eval_every, c.checkpoint_every = 4, 8, 1, 4, 2
  c.num_grid_images = 2
  c.data.crop_size = 32
  c.generator = ml_collections.ConfigDict(dict(name="unet", num_downs=3, num_feat=8, max_feat=16))
  c.discriminator = ml_collections.ConfigDict(dict(name="patchgan", num_feat=8, num_layers=2, norm="batch"))
  c.discriminator_conditional = True
  c.loss.terms = ml_collections.ConfigDict({"l1": 1.0, "ms_ssim": 0.84, "cosine": 0.5})
  c.loss.ms_ssim.update(scales=2, window_size=7)  # 32-px crops.
  c.loss.adversarial, c.loss.adversarial_weight, c.loss.gp_weight = "vanilla", 0.01, 0.0
  c.loss.mismatch_weight = 0.5
  c.eval.holdout = 1
  return common.apply_variant(c, variant, {})
