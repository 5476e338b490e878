"""Colorization: a gray photo in, a colour one out, after Harshith J L et al., "Recovering Old or Damaged Images
using GAN" (JSSSTU), whose colorization model is pix2pix (Isola et al. 2017, "Image-to-Image Translation with
Conditional Adversarial Networks"): a U-Net from one gray channel to RGB, pre-trained with L1 alone, then L1
(pix2pix's weight 100 on [-1, 1] images: 200 on the [0, 1] images here) + the vanilla GAN objective against a
conditional PatchGAN, Adam (2e-4, betas 0.5 / 0.999).

The write-up pre-trains the generator before the adversarial phase "to avoid the blind leading the blind problem
where neither the generator nor the discriminator knows anything about the task". Here that warm-up is the first
`loss.adversarial_start_step` steps of the same run (the generator's loss is L1 alone until then), not a separate
run chained with `generator.init_from`: one command trains, resumes and is scored like any recipe, the optimizer's
state carries over into the adversarial phase, and the discriminator, trained on the warming generator's outputs
all along, starts the adversarial phase knowing the task rather than from scratch. (The write-up's first stage, a
ResNet18 encoder pre-trained on ImageNet classification, is not reproduced: its generator here is pix2pix's U-Net,
the architecture the write-up describes for both of its models.)

Usage: --config configs/colorize_pix2pix.py[:tiny|demo|bench]. No variant is the full recipe at the sources' scale.
`restore` takes any colour or gray photo and writes it in colour.
"""

import ml_collections

from configs import common


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: for tests and CI."""
  common.tiny_schedule(c)
  c.generator.update(num_downs=3, num_feat=8, max_feat=16, dropout_blocks=1)
  c.discriminator.update(num_feat=8, num_layers=2)
  c.loss.adversarial_start_step = 2  # Two L1-only steps, then two adversarial ones: both phases run.
  c.eval.holdout = 1


def _demo(c: ml_collections.ConfigDict) -> None:
  """At most 15 minutes on a 2-core CPU: a small U-Net on 64 px crops colours held-out photos."""
  c.total_steps = 1000  # About 12 minutes of an idle 2-core CPU (docs/recipes/colorize_pix2pix.md).
  c.batch_size = 8
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.data.crop_size = 64
  # Corrects the gray image (input_residual) rather than drawing the photo anew: the output keeps the gray
  # input's luma exactly, and the network learns only the colour, at a quarter of the resolution
  # (colour_downscale; Zhang et al. 2016, "Colorful Image Colorization", predict ab at a quarter too).
  c.generator.update(num_downs=6, num_feat=32, max_feat=128, dropout_blocks=2, input_residual=True,
                     colour_downscale=4)
  c.discriminator.update(num_feat=32, num_layers=2)
  c.loss.adversarial_start_step = 600  # 60% L1 warm-up, then the adversarial phase.
  c.eval.holdout = 1  # rocket.jpg is kept out of training and scored whole at every evaluation.
  c.ema_decay = 0.99  # An average over the last ~100 steps (pix2pix keeps none).


def _bench(c: ml_collections.ConfigDict) -> None:
  """The full networks at the training shape, for throughput measurements."""
  c.total_steps = 20
  c.log_every = 10
  c.batch_size = 8  # Divides any device count up to 8 (the full recipe's batch of 1 does not).
  c.loss.adversarial_start_step = 0


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.recipe = "colorize_pix2pix"
  # Around 8000 COCO images of 256 x 256 (Harshith J L et al., section III), in pix2pix's batches of 1 (Isola et
  # al. 2017, section 3.3). The write-up gives no epoch counts: 20 epochs of L1 pre-training and 80 adversarial
  # ones here, 800,000 steps in all.
  c.batch_size = 1
  c.total_steps = 800_000
  c.loss.adversarial_start_step = 160_000
  c.log_every = 100
  c.eval_every = 10_000
  c.checkpoint_every = 10_000
  c.task.update(scale=1, in_channels=1, out_channels=3, use_mask=False, crop_border=0, baseline="identity")
  c.data.crop_size = 256
  c.degradation = ml_collections.ConfigDict({"name": "grayscale"})  # BT.601 luma, one channel.
  # pix2pix, one gray channel in and three out, with the write-up's C64-C128-C256-C512-C512-C512 discriminator
  # (the 286 x 286 PatchGAN) seeing the gray photo beside the real or coloured one.
  common.pix2pix(c, patchgan_layers=5)
  return common.apply_variant(c, variant, {"tiny": _tiny, "demo": _demo, "bench": _bench})
