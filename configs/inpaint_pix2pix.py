"""Old and damaged photos: fill scratches, blotches and holes, after Harshith J L et al., "Recovering Old or Damaged
Images using GAN" (JSSSTU), whose restoration model is pix2pix (Isola et al. 2017, "Image-to-Image Translation
with Conditional Adversarial Networks"): a U-Net generator fed the damaged image and the mask of missing pixels,
a conditional PatchGAN, L1 (pix2pix's weight 100 on [-1, 1] images: 200 on the [0, 1] images here) + the vanilla
GAN objective, Adam (2e-4, betas 0.5 / 0.999).

Usage: --config configs/inpaint_pix2pix.py[:tiny|demo|bench]. No variant is the full recipe at the sources' scale.
Restoring a photo takes its mask from `--mask FILE` (white = missing), or else finds the pure-white and transparent
pixels (see docs/recipes/inpaint_pix2pix.md).
"""

import ml_collections

from configs import common
from restore_jax.degradations import default_config


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: for tests and CI."""
  common.tiny_schedule(c)
  c.generator.update(num_downs=3, num_feat=8, max_feat=16, dropout_blocks=1)
  c.discriminator.update(num_feat=8, num_layers=2)
  c.eval.holdout = 1  # One sample photograph scored whole at every evaluation.


def _demo(c: ml_collections.ConfigDict) -> None:
  """At most 15 minutes on a 2-core CPU: a small U-Net on 64 px crops fills the holes of held-out photos."""
  c.total_steps = 1000  # About 12 minutes of an idle 2-core CPU (docs/recipes/inpaint_pix2pix.md).
  c.batch_size = 8
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.data.crop_size = 64
  # Six halvings take 64 px to 1 px, as pix2pix's eight do 256 px. It corrects the damaged image rather than
  # redrawing it (input_residual): a 15-minute model then keeps the undamaged pixels from the first step on.
  c.generator.update(num_downs=6, num_feat=32, max_feat=128, dropout_blocks=2, input_residual=True)
  # Two stride-2 layers: 34 px patches (Isola et al. 2017, section 4.4), about half a crop.
  c.discriminator.update(num_feat=32, num_layers=2)
  c.eval.holdout = 1  # rocket.jpg is kept out of training and scored whole at every evaluation.
  # pix2pix keeps no moving average; a 1000-step run is scored with one over its last ~100 steps.
  c.ema_decay = 0.99


def _bench(c: ml_collections.ConfigDict) -> None:
  """The full networks at the training shape, for throughput measurements."""
  c.total_steps = 20
  c.log_every = 10
  c.batch_size = 8  # Divides any device count up to 8 (the full recipe's batch of 1 does not).


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.recipe = "inpaint_pix2pix"
  # Around 1000 ImageNet images of 256 x 256, 75 epochs (Harshith J L et al., section III); pix2pix trains with
  # batches of 1 (Isola et al. 2017, section 3.3): 75,000 steps.
  c.batch_size = 1
  c.total_steps = 75_000
  c.log_every = 100
  c.eval_every = 5_000
  c.checkpoint_every = 5_000
  c.task.update(scale=1, in_channels=3, out_channels=3, use_mask=True, crop_border=0, baseline="identity")
  c.data.crop_size = 256
  # Scratches, blotches, rectangular and free-form holes over 5 to 25% of the image, filled with white.
  c.degradation = ml_collections.ConfigDict(default_config("damage"))
  # pix2pix, with the write-up's discriminator: C64-C128-C256-C512-C512-C512, batch norm from the second layer,
  # the 286 x 286 PatchGAN. The mask is the U-Net's fourth input channel, and the discriminator sees it too.
  common.pix2pix(c, patchgan_layers=5)
  return common.apply_variant(c, variant, {"tiny": _tiny, "demo": _demo, "bench": _bench})
