"""Grain removal after the write-up "Image Restoration Using Generative Adversarial Networks": photographs whose
pixels a 5x5 kernel has shuffled, at a low or a high rate, restored by a fully convolutional generator trained
against a conditional PatchGAN (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial
Networks") with L1 + MS-SSIM (Zhao et al. 2017, "Loss Functions for Image Restoration with Neural Networks") +
cosine colour similarity + the adversarial loss; the discriminator learns more slowly than the generator and also
sees mismatched pairs as fakes, the write-up's two remedies for a discriminator that wins too easily.

Usage: --config configs/degrain_patchgan.py[:tiny|demo|bench], and --config.degradation.preset=high for the
write-up's high distortion (low is the default). No variant is the full recipe at the sources' scale.
"""

import ml_collections

from configs import common
from restore_jax.degradations import default_config


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: for tests and CI."""
  common.tiny_schedule(c)
  c.generator.update(num_downs=3, num_feat=8, max_feat=16, dropout_blocks=1)
  c.discriminator.update(num_feat=8, num_layers=2)
  c.loss.ms_ssim.update(scales=2, window_size=7)  # Fits 32 px crops.
  c.eval.holdout = 1


def _demo(c: ml_collections.ConfigDict) -> None:
  """About 12 minutes on an idle 2-core CPU: a small U-Net on 48 px crops removes grain from held-out photos."""
  c.total_steps = 5000
  c.batch_size = 8
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.data.crop_size = 48
  # Four halvings take 48 px to 3 px. The shuffled image is already within a few dB of the clean one, so the
  # network predicts a correction of it (input_residual, global residual learning as in VDSR, Kim et al. 2016)
  # and a short run starts from the input rather than first learning to copy it through the U.
  c.generator.update(num_downs=4, num_feat=16, max_feat=64, dropout_blocks=1, input_residual=True)
  c.discriminator.update(num_feat=16, num_layers=2)  # 34 px patches: most of a crop.
  c.loss.ms_ssim.update(scales=3, window_size=7)  # Fits 48 px crops.
  c.eval.holdout = 1  # rocket.jpg is kept out of training and scored whole at every evaluation.
  c.ema_decay = 0.99  # An EMA over the last ~100 of 5000 steps.


def _bench(c: ml_collections.ConfigDict) -> None:
  """The full networks at the training shape, for throughput measurements."""
  c.total_steps = 20
  c.log_every = 10


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.recipe = "degrain_patchgan"
  # The write-up publishes no schedule, batch or crop size; these are pix2pix's for 256 px images (Isola et al.
  # 2017, section 3.3 and appendix 6.2: Adam, betas 0.5 / 0.999, about 200 epochs), with a batch of 16 faces
  # (PubFig, about 58,000 images: 200 epochs is ~730,000 steps; 200,000 are used here).
  c.total_steps = 200_000
  c.batch_size = 16
  c.log_every = 100
  c.eval_every = 5_000
  c.checkpoint_every = 5_000
  c.task.update(scale=1, in_channels=3, out_channels=3, crop_border=0, baseline="median")
  c.data.crop_size = 256
  # A 5x5 kernel that switches pixel positions, at the write-up's low or high rate (--config.degradation.preset).
  c.degradation = ml_collections.ConfigDict(default_config("pixel_shuffle", preset="low"))
  # "Fully convolutional": pix2pix's U-Net for 256 px, eight halvings, 64 to 512 channels, batch norm, dropout
  # in the three decoder blocks nearest the bottleneck (Isola et al. 2017, appendix 6.1.1).
  c.generator = ml_collections.ConfigDict(dict(
      name="unet", out_ch=3, num_downs=8, num_feat=64, max_feat=512, norm="batch", dropout_rate=0.5,
      dropout_blocks=3, input_residual=False))
  # A PatchGAN "predicting a patch rather than a single class probability": the 70x70 one (Isola et al. 2017,
  # section 3.2.2), conditioned on the shuffled image, with mismatched (condition, other target) pairs as fakes.
  c.discriminator = ml_collections.ConfigDict(dict(name="patchgan", num_feat=64, num_layers=3, norm="batch"))
  c.discriminator_conditional = True
  c.loss.mismatch_weight = 0.5  # The mismatched pairs count half as much as the restored ones.
  # pix2pix's Adam for the generator; the write-up lowers the discriminator's learning rate without saying by how
  # much: a quarter of the generator's.
  c.optim.g_learning_rate = 2e-4
  c.optim.d_learning_rate = 5e-5
  c.optim.b1, c.optim.b2 = 0.5, 0.999
  c.optim.n_critic = 1
  c.ema_decay = 0.0  # pix2pix keeps no moving average: the "EMA" is the generator itself.
  # Zhao et al. 2017 (section 3.3) mix MS-SSIM and L1 as 0.84 MS-SSIM + 0.16 L1; the write-up adds the cosine
  # colour term against the discolouration SSIM (computed on luminance there) allows, and the vanilla
  # (non-saturating) GAN loss of pix2pix at 1/100 of the reconstruction (lambda = 100, Isola et al. 2017, eq. 4).
  c.loss.terms = ml_collections.ConfigDict({"l1": 0.16, "ms_ssim": 0.84, "cosine": 0.5})
  c.loss.ms_ssim.update(scales=5, window_size=11)  # The full MS-SSIM: 256 px fits.
  c.loss.adversarial = "vanilla"
  c.loss.adversarial_weight = 0.01
  c.loss.gp_weight = 0.0
  c.eval.metrics = ("psnr", "ssim")
  c.eval.best_metric = "psnr_rgb"
  return common.apply_variant(c, variant, {"tiny": _tiny, "demo": _demo, "bench": _bench})
