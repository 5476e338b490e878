"""x4 super-resolution of real photos with unknown damage, as Real-ESRGAN trains it (Wang et al. 2021, "Real-ESRGAN:
Training Real-World Blind Super-Resolution with Pure Synthetic Data"), with the numbers of its
options/train_realesrnet_x4plus.yml and train_realesrgan_x4plus.yml. The inputs come from the high-order
`realistic` degradation (blur, resize, noise and JPEG twice, then a sinc filter; docs/degradations.md). Two runs:

  1. `psnr`: Real-ESRNet, the RRDB trained with L1 alone on those inputs;
  2. no variant: Real-ESRGAN, its generator initialised from run 1 (`generator.init_from`), L1 1 + VGG19 perceptual
     1 (five layers) + vanilla GAN 0.1 against the U-Net discriminator with spectral norm, EMA 0.999.

  python -m restore_jax.main --config configs/sr_realesrgan.py:psnr --workdir runs/sr_realesrgan_psnr
  python -m restore_jax.main --config configs/sr_realesrgan.py --workdir runs/sr_realesrgan \
      --config.generator.init_from=runs/sr_realesrgan_psnr

The same pair at demo size: `:psnr_demo` then `:demo` (and `:psnr_tiny` then `:tiny`, `:psnr_bench`, `:bench`).
The perceptual term needs VGG19's ImageNet weights (README, "Perceptual loss"); the full recipe stops with a message
saying where to put them when they are absent. The demo runs without it and says so.
"""

import ml_collections

from configs import common
from restore_jax.degradations import default_config

# Where each size's PSNR run is expected by default (override with --config.generator.init_from=DIR[:STEP]).
PSNR_RUNS = {"full": "runs/sr_realesrgan_psnr", "demo": "runs/sr_realesrgan_psnr_demo", "bench": "", "tiny": ""}


def _psnr(c: ml_collections.ConfigDict) -> None:
  """Real-ESRNet (train_realesrnet_x4plus.yml): L1 alone, Adam 2e-4, 1M steps."""
  c.total_steps = 1_000_000
  # Real-ESRNet starts from ESRGAN's published weights (its pretrain_network_g); to do the same, point this at a
  # run of configs/sr_esrgan.py. Empty: from scratch.
  c.generator.init_from = ""
  c.loss.terms = ml_collections.ConfigDict({"l1": 1.0})
  c.loss.adversarial_weight = 0.0
  # L1 alone: the discriminator is still stepped by the loop but never heard; the smallest one keeps it cheap.
  c.discriminator = ml_collections.ConfigDict(dict(name="patchgan", num_feat=4, num_layers=1, norm="none"))
  c.optim.g_learning_rate = 2e-4
  c.optim.d_learning_rate = 2e-4
  c.optim.milestones = (1_000_000,)  # MultiStepLR at the last step: a constant rate in effect.


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: for tests and CI."""
  common.tiny_schedule(c)
  c.generator.update(num_feat=8, num_block=1, num_grow_ch=4)
  if not common.in_stage(c, "psnr"):
    c.generator.init_from = PSNR_RUNS["tiny"]
    c.discriminator.update(num_feat=4)
  c.optim.milestones = (2,)
  c.loss.terms.perceptual = 0.0
  _small_realistic(c.degradation)
  c.eval.holdout = 1


def _small_realistic(d: ml_collections.ConfigDict) -> None:
  """The realistic chain for small crops: kernels up to 11 pixels rather than 21 (a 21-pixel kernel is wider than
  the 16- or 8-pixel images its first resize can leave), the same kinds of blur, noise, JPEG and order."""
  d.blur_kernel_size = d.blur_kernel_size2 = d.final_sinc_size = (7, 11)


def _demo(c: ml_collections.ConfigDict) -> None:
  """Minutes on a 2-core CPU: a small RRDB, pixel pre-trained (`psnr_demo`), then the GAN phase (`demo`)."""
  c.total_steps = 500
  c.batch_size = 8
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 250
  c.data.crop_size = 64
  c.generator.update(num_feat=32, num_block=2, num_grow_ch=16, bicubic_residual=True)
  if not common.in_stage(c, "psnr"):
    c.generator.init_from = PSNR_RUNS["demo"]
    c.discriminator.update(num_feat=16)
    # No VGG19 weights are shipped, so the demo's GAN phase has no perceptual term. L1 takes its weight as well as
    # its own (L1 2 + vanilla GAN 0.1), so that the content terms keep their share against the adversarial one, as
    # the ESRGAN demo does (configs/sr_esrgan.py). With L1 at 1 the GAN phase lost 0.14 dB more RGB PSNR.
    c.loss.terms.l1 = 2.0
  c.optim.milestones = (400,)
  c.loss.terms.perceptual = 0.0
  _small_realistic(c.degradation)
  # The handful of sample photos have a narrow palette: without a random channel order per crop, the model learns
  # it as a prior and turns the greens of held-out photos brown (docs/recipes/sr_realesrgan.md). Real-ESRGAN's
  # own training sets (DF2K and OST, thousands of photos) need no such help.
  c.data.permute_channels = True
  c.eval.holdout = 1  # rocket.jpg is kept out of training and scored whole at every evaluation.
  c.ema_decay = 0.99  # The EMA's horizon is ~1 / (1 - decay) steps: ~100 of a few hundred.


def _psnr_demo(c: ml_collections.ConfigDict) -> None:
  """The demo's pixel pre-training: longer, at a higher rate."""
  c.total_steps = 1000
  c.eval_every = 500
  c.checkpoint_every = 500
  c.optim.g_learning_rate = 5e-4
  c.optim.milestones = (700,)


def _bench(c: ml_collections.ConfigDict) -> None:
  """The full networks at the training shape, for throughput measurements."""
  c.total_steps = 20
  c.log_every = 10
  c.batch_size = 16  # One GPU's share is 12; 16 divides any device count up to 16.
  if not common.in_stage(c, "psnr"):
    c.generator.init_from = PSNR_RUNS["bench"]
  c.loss.terms.perceptual = 0.0  # Benchmarks must run without a weights file; the VGG term is timed apart.


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.recipe = "sr_realesrgan"
  c.total_steps = 400_000  # train_realesrgan_x4plus.yml: total_iter.
  c.batch_size = 48  # batch_size_per_gpu 12 on 4 GPUs.
  c.task.update(scale=4, in_channels=3, out_channels=3, crop_border=4, baseline="bicubic")
  # gt_size 256. Real-ESRGAN flips but does not rotate (use_rot: False); data.augment does both.
  c.data.crop_size = 256
  c.degradation = ml_collections.ConfigDict(default_config("realistic", scale=4))
  # RRDBNet, 64 features, 23 blocks, growth 32 (Real-ESRGAN keeps ESRGAN's generator for x4).
  c.generator = ml_collections.ConfigDict(dict(
      name="rrdb", num_feat=64, num_block=23, num_grow_ch=32, scale=4, init_from=PSNR_RUNS["full"]))
  # The U-Net discriminator with spectral norm, 64 features, skip connections (Wang et al. 2021, section 4.2).
  c.discriminator = ml_collections.ConfigDict(dict(name="unet_sn", num_feat=64, skip_connection=True))
  # Adam 1e-4, betas 0.9 / 0.99 for both networks; MultiStepLR with its one milestone at the last step.
  c.optim.g_learning_rate = 1e-4
  c.optim.d_learning_rate = 1e-4
  c.optim.b1, c.optim.b2 = 0.9, 0.99
  c.optim.g_schedule = c.optim.d_schedule = "step"
  c.optim.milestones = (400_000,)
  c.optim.gamma = 0.5
  c.optim.n_critic = 1
  c.ema_decay = 0.999
  # L1 1 + VGG19 perceptual 1 (conv1_2 0.1, conv2_2 0.1, conv3_4, conv4_4, conv5_4 1, before the ReLU, L1
  # distance) + vanilla GAN 0.1 (Wang et al. 2021, section 4.2). Real-ESRGAN compares the output with an
  # unsharp-masked target in the L1 and perceptual terms; here the target is used as it is.
  c.loss.terms = ml_collections.ConfigDict({"l1": 1.0, "perceptual": 1.0})
  c.loss.perceptual.layers = ml_collections.ConfigDict(
      {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0})
  c.loss.perceptual.before_activation = True
  c.loss.perceptual.criterion = "l1"
  c.loss.adversarial = "vanilla"
  c.loss.adversarial_weight = 0.1
  c.loss.gp_weight = 0.0
  c.eval.best_metric = "psnr_y"
  return common.apply_variant(
      c, variant, {"psnr": _psnr, "tiny": _tiny, "demo": _demo, "bench": _bench, "psnr_demo": _psnr_demo})
