"""x4 super-resolution with WGAN-GP, after the write-up "Single Image Super Resolution": ESRGAN's RRDB generator
(Wang et al. 2018), a VGG-style critic without batch norm trained with WGAN-GP (Gulrajani et al. 2017), and
MSE + VGG19 perceptual + adversarial losses (Ledig et al. 2017).

Usage: --config configs/sr_wgangp.py[:tiny|demo|bench]. No variant is the full recipe at the sources' scale.
"""

import ml_collections

from configs import common


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: for tests and CI."""
  common.tiny_schedule(c)
  c.generator.update(num_feat=8, num_block=1, num_grow_ch=4)
  c.discriminator.update(num_feat=8, input_size=32)
  c.optim.n_critic = 1  # Each critic update adds to the compile time; tests that need more set it.
  c.loss.terms.perceptual = 0.0
  c.eval.holdout = 1  # One sample photograph scored whole at every evaluation.


def _demo(c: ml_collections.ConfigDict) -> None:
  """A few minutes on a 2-core CPU; PSNR climbs past bicubic on the sample photographs."""
  c.total_steps = 800
  c.batch_size = 8
  c.log_every = 50
  c.eval_every = 400
  c.checkpoint_every = 400
  c.data.crop_size = 64
  c.generator.update(num_feat=32, num_block=2, num_grow_ch=16, bicubic_residual=True)
  c.discriminator.update(num_feat=16, input_size=64)
  c.optim.g_learning_rate = 5e-4
  c.optim.d_learning_rate = 2e-4
  c.optim.n_critic = 1
  c.optim.b1, c.optim.b2 = 0.9, 0.99  # ESRGAN's Adam: better than WGAN-GP's beta1 = 0 for the pixel phase.
  c.loss.adversarial_start_step = 400  # Pixel pre-training first, then the GAN phase.
  # At SRGAN's 1e-3 the unbounded WGAN scores outweigh the small MSE of a few-minute model, and PSNR falls
  # 1.5 dB below bicubic within 200 steps; 1e-4 keeps the GAN phase visible without undoing the pixel phase.
  c.loss.adversarial_weight = 1e-4
  c.loss.terms.perceptual = 0.0
  c.eval.holdout = 1  # rocket.jpg is kept out of training and scored whole at steps 400 and 800.
  # The EMA's horizon is ~1 / (1 - decay) steps: at 0.999 an 800-step EMA still holds 45% of the random init
  # (0.999**800), and scored 2.8 dB (RGB) below bicubic at step 400; 0.99 averages over the last ~100 steps.
  c.ema_decay = 0.99


def _bench(c: ml_collections.ConfigDict) -> None:
  """The shape restore_jax.bench and benchmarks/ measure: ESRGAN's RRDB widths with 6 of its 23 blocks, the full
  critic, 128-pixel crops, batch 4 and one critic update per step, small enough to time on a CPU."""
  c.total_steps = 20
  c.log_every = 10
  c.batch_size = 4
  c.data.crop_size = 128
  c.generator.update(num_feat=64, num_block=6, num_grow_ch=32)
  c.discriminator.update(num_feat=64, input_size=128)
  c.optim.n_critic = 1
  c.loss.terms.perceptual = 0.0  # Benchmarks must run without a weights file; the VGG term is timed apart.


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.recipe = "sr_wgangp"
  c.total_steps = 400_000  # ESRGAN's GAN phase length.
  c.batch_size = 16  # ESRGAN (Wang et al. 2018).
  c.task.update(scale=4, in_channels=3, out_channels=3, crop_border=4, baseline="bicubic")
  c.data.crop_size = 128  # HR patches of 128 -> LR 32 (ESRGAN); the critic is built for this size.
  c.degradation = ml_collections.ConfigDict(dict(name="bicubic", scale=4))
  # RRDBNet at ESRGAN size: 16,697,987 parameters.
  c.generator = ml_collections.ConfigDict(dict(name="rrdb", num_feat=64, num_block=23, num_grow_ch=32, scale=4))
  c.discriminator = ml_collections.ConfigDict(dict(name="vgg_critic", num_feat=64, input_size=128))
  # Adam with beta1 = 0, beta2 = 0.9, lr 1e-4 and 5 critic steps per generator step: the WGAN-GP paper's
  # defaults (Gulrajani et al. 2017, Algorithm 1).
  c.optim.g_learning_rate = 1e-4
  c.optim.d_learning_rate = 1e-4
  c.optim.b1 = 0.0
  c.optim.b2 = 0.9
  c.optim.n_critic = 5
  c.loss.adversarial = "wgan_gp"
  c.loss.adversarial_weight = 1e-3  # SRGAN's adversarial weight (Ledig et al. 2017).
  c.loss.gp_weight = 10.0  # lambda in WGAN-GP.
  # MSE, plus VGG19 features: SRGAN rescales the feature maps by 1/12.75 before the MSE, i.e. a weight of
  # 1/12.75**2 on the plain MSE of the features.
  c.loss.terms = ml_collections.ConfigDict({"mse": 1.0, "perceptual": 1 / 12.75**2})
  c.loss.perceptual.layers = ml_collections.ConfigDict({"conv5_4": 1.0})
  c.loss.perceptual.before_activation = True  # ESRGAN: features before the ReLU keep more signal.
  return common.apply_variant(c, variant, {"tiny": _tiny, "demo": _demo, "bench": _bench})
