"""Denoising after the lecture "Image restoration with GANs": photographs with Gaussian or Poisson (shot) noise of a
random strength, I = J + g, restored by pix2pix (Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks"): a U-Net generator, a conditional PatchGAN that sees the noisy image beside the clean or
restored one, and L1 (pix2pix's weight 100 on [-1, 1] images: 200 on the [0, 1] images here) + the vanilla GAN
objective.

Usage: --config configs/denoise_unet.py[:tiny|demo|bench]. No variant is the full recipe at the sources' scale.
The noise is reached as --config.degradation.gaussian.sigma='(0.0,0.1)' and --config.degradation.poisson.peak=...
"""

import ml_collections

from configs import common
from restore_jax.degradations import default_config, one_of_config


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: for tests and CI."""
  common.tiny_schedule(c)
  c.generator.update(num_downs=3, num_feat=8, max_feat=16, dropout_blocks=1)
  c.discriminator.update(num_feat=8, num_layers=2)
  c.eval.holdout = 1


def _demo(c: ml_collections.ConfigDict) -> None:
  """About 12 minutes on an idle 2-core CPU: a small U-Net on 48 px crops denoises held-out photos."""
  c.total_steps = 5000
  c.batch_size = 8
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.data.crop_size = 48
  # Four halvings take 48 px to 3 px. The network predicts the correction of the noisy image (input_residual,
  # residual learning as in DnCNN, Zhang et al. 2017), so a short run need not learn to copy it first.
  c.generator.update(num_downs=4, num_feat=16, max_feat=64, dropout_blocks=1, input_residual=True)
  c.discriminator.update(num_feat=16, num_layers=2)  # 34 px patches: most of a crop.
  c.eval.holdout = 1  # rocket.jpg is kept out of training and scored whole at every evaluation.
  c.ema_decay = 0.99  # An EMA over the last ~100 of 5000 steps.


def _bench(c: ml_collections.ConfigDict) -> None:
  """The full networks at the training shape, for throughput measurements."""
  c.total_steps = 20
  c.log_every = 10
  c.batch_size = 8  # Divides any device count up to 8 (the full recipe's batch of 1 does not).


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.recipe = "denoise_unet"
  # pix2pix trains with batches of one 256 px image (Isola et al. 2017, section 3.3 and appendix 6.2); the
  # lecture names no data set, so the length is that of a 200-epoch run on ~1000 images.
  c.batch_size = 1
  c.total_steps = 200_000
  c.log_every = 100
  c.eval_every = 5_000
  c.checkpoint_every = 5_000
  c.task.update(scale=1, in_channels=3, out_channels=3, crop_border=0, baseline="median")
  c.data.crop_size = 256
  # Additive white Gaussian noise with sigma up to 0.2 (51/255, blind denoising's usual range up to 50/255), or
  # shot noise with 10 to 255 photons at white; one of the two per sample, equally often.
  c.degradation = ml_collections.ConfigDict(one_of_config(
      gaussian=default_config("gaussian_noise", sigma=(0.0, 0.2)),
      poisson=default_config("poisson_noise", peak=(10.0, 255.0))))
  # pix2pix as published: the 70x70 PatchGAN, conditioned on the noisy image (Isola et al. 2017, section 3.2.2).
  common.pix2pix(c, patchgan_layers=3)
  return common.apply_variant(c, variant, {"tiny": _tiny, "demo": _demo, "bench": _bench})
