"""Deblurring after Liu Shiqiang, "GAN Network Image Translator: Image Restoration and Enhancement" (code:
lsqpku/img2img): an encoder-decoder "image translator" made of DCGAN's two halves (Radford et al. 2016) trained
with the L2 loss on photographs blurred by a Gaussian, a random Gaussian or a resize blur, mixed in training as
the write-up advises; then, as the write-up points to next, pix2pix's adversarial training (Isola et al. 2017):
a conditional PatchGAN joins after `loss.adversarial_start_step` steps of L2 alone.

Usage: --config configs/deblur_translator.py[:tiny|demo|bench]. No variant is the full recipe at the sources' scale.
"""

import ml_collections

from configs import common
from restore_jax.degradations import default_config, one_of_config


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: for tests and CI. The GAN joins halfway, so a 2 + 2 step run crosses the switch."""
  common.tiny_schedule(c)
  c.generator.update(num_downs=2, num_feat=8)
  c.discriminator.update(num_feat=8, num_layers=2)
  c.loss.adversarial_start_step = 2
  c.eval.holdout = 1


def _demo(c: ml_collections.ConfigDict) -> None:
  """About 8 minutes on an idle 2-core CPU: a shallow translator on 48 px crops sharpens held-out photos."""
  c.total_steps = 3000
  c.batch_size = 8
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.data.crop_size = 48
  # Two halvings, not the source's four: the 12 x 12 x 64 code holds more numbers than the 48 x 48 x 3 crop, so
  # detail can pass through a network without skip connections. And the network predicts a correction of the
  # blurred image (input_residual, global residual learning as in VDSR, Kim et al. 2016): trained from scratch
  # for 1000 steps without it, the translator was still 4.5 dB below the blurred input itself.
  c.generator.update(num_downs=2, num_feat=32, input_residual=True)
  c.discriminator.update(num_feat=16, num_layers=2)
  c.loss.adversarial_start_step = 2000  # Two thirds L2 alone, then the GAN.
  c.eval.holdout = 1  # rocket.jpg is kept out of training and scored whole at every evaluation.
  c.ema_decay = 0.99  # An EMA over the last ~100 of 3000 steps.


def _bench(c: ml_collections.ConfigDict) -> None:
  """The full networks at the training shape, for throughput measurements."""
  c.total_steps = 20
  c.log_every = 10


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.recipe = "deblur_translator"
  # lsqpku/img2img trains 64 x 64 faces in batches of 64 for 50 epochs with Adam (lr 2e-4, beta1 0.5: DCGAN's,
  # Radford et al. 2016, section 4); over its ~20,000 training images that is ~15,600 steps of L2. The GAN phase
  # the write-up proposes gets as many again.
  c.batch_size = 64
  c.total_steps = 31_200
  c.log_every = 100
  c.eval_every = 2_000
  c.checkpoint_every = 2_000
  c.task.update(scale=1, in_channels=3, out_channels=3, crop_border=0, baseline="identity")
  c.data.crop_size = 64
  # Gaussian blur, random Gaussian blur and resize blur (down then back up), one of the three per sample: the
  # write-up's model trained on Gaussian blur alone failed on resize blur, one trained on both handled both. It
  # gives no sigmas; its resize blur shrinks the image 16-fold in area, a factor of 4 per side.
  c.degradation = ml_collections.ConfigDict(one_of_config(
      gaussian=default_config("gaussian_blur", sigma=(2.0, 2.0)),
      random_gaussian=default_config("gaussian_blur", sigma=(0.5, 3.0)),
      resize=default_config("resize_blur", factor=(2.0, 4.0))))
  # DCGAN's discriminator as the encoder (5x5 stride-2 convs, batch norm, leaky ReLU) and its generator as the
  # decoder (5x5 stride-2 transposed convs, batch norm, ReLU, tanh), 64-128-256-512 channels, no bottleneck layer.
  c.generator = ml_collections.ConfigDict(dict(name="translator", out_ch=3, num_downs=4, num_feat=64, norm="batch"))
  # pix2pix's conditional PatchGAN; two stride-2 layers give 34 x 34 patches, about half a 64 px image.
  c.discriminator = ml_collections.ConfigDict(dict(name="patchgan", num_feat=64, num_layers=2, norm="batch"))
  c.discriminator_conditional = True
  c.optim.g_learning_rate = 2e-4
  c.optim.d_learning_rate = 2e-4
  c.optim.b1, c.optim.b2 = 0.5, 0.999
  c.optim.n_critic = 1
  c.ema_decay = 0.0  # Neither source keeps a moving average: the "EMA" is the generator itself.
  # The write-up's L2 loss between the output and the clean image; weighted 100 so that pix2pix's balance of
  # reconstruction (lambda = 100) and the non-saturating GAN loss (Isola et al. 2017, eq. 4) carries over.
  c.loss.terms = ml_collections.ConfigDict({"mse": 100.0})
  c.loss.adversarial = "vanilla"
  c.loss.adversarial_weight = 1.0
  c.loss.gp_weight = 0.0
  c.loss.adversarial_start_step = 15_600
  c.eval.metrics = ("psnr", "ssim")
  c.eval.best_metric = "psnr_rgb"
  return common.apply_variant(c, variant, {"tiny": _tiny, "demo": _demo, "bench": _bench})
