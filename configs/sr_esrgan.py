"""x4 super-resolution as ESRGAN trains it (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution Generative
Adversarial Networks"), with the numbers of BasicSR's options/train/ESRGAN/train_RRDBNet_PSNR_x4.yml and
train_ESRGAN_x4.yml. Two runs:

  1. `psnr`: the PSNR-oriented RRDB, L1 alone (ESRGAN section 3.4: it starts the GAN phase away from bad local
     optima and gives the discriminator sharper images from the start);
  2. no variant: the GAN phase, its generator initialised from run 1 (`generator.init_from`), L1 0.01 + VGG19
     conv5_4 perceptual 1 + relativistic GAN 0.005, EMA 0.999, learning rates halved at 50k, 100k, 200k, 300k.

  python -m restore_jax.main --config configs/sr_esrgan.py:psnr --workdir runs/sr_esrgan_psnr
  python -m restore_jax.main --config configs/sr_esrgan.py --workdir runs/sr_esrgan \
      --config.generator.init_from=runs/sr_esrgan_psnr

The same pair at demo size: `:psnr_demo` then `:demo` (and `:psnr_tiny` then `:tiny`, `:psnr_bench`, `:bench`).
The perceptual term needs VGG19's ImageNet weights (README, "Perceptual loss"); the full recipe stops with a message
saying where to put them when they are absent. The demo runs without it and says so.
"""

import ml_collections

from configs import common

# Where each size's PSNR run is expected by default (override with --config.generator.init_from=DIR[:STEP]).
PSNR_RUNS = {"full": "runs/sr_esrgan_psnr", "demo": "runs/sr_esrgan_psnr_demo", "bench": "", "tiny": ""}


def _psnr(c: ml_collections.ConfigDict) -> None:
  """The PSNR-oriented pre-training run (train_RRDBNet_PSNR_x4.yml)."""
  c.total_steps = 1_000_000
  c.generator.init_from = ""
  c.loss.terms = ml_collections.ConfigDict({"l1": 1.0})
  c.loss.adversarial_weight = 0.0
  # L1 alone: the discriminator is still stepped by the loop but never heard; the smallest one keeps it cheap.
  c.discriminator = ml_collections.ConfigDict(dict(name="patchgan", num_feat=4, num_layers=1, norm="none"))
  # Adam 2e-4, betas 0.9 / 0.99, halved every 200k of 1M steps (Wang et al. 2018, section 4.1). BasicSR's yml
  # instead restarts a cosine decay every 250k steps, which one cosine schedule cannot express.
  c.optim.g_learning_rate = 2e-4
  c.optim.d_learning_rate = 2e-4
  c.optim.g_schedule = c.optim.d_schedule = "step"
  c.optim.milestones = (200_000, 400_000, 600_000, 800_000)
  c.ema_decay = 0.999


def _tiny(c: ml_collections.ConfigDict) -> None:
  """Seconds on a CPU: for tests and CI."""
  common.tiny_schedule(c)
  c.generator.update(num_feat=8, num_block=1, num_grow_ch=4)
  if not common.in_stage(c, "psnr"):
    c.generator.init_from = PSNR_RUNS["tiny"]
    c.discriminator.update(num_feat=4, input_size=32)
  c.optim.milestones = (2, 3)
  c.loss.terms.perceptual = 0.0
  c.eval.holdout = 1


def _demo(c: ml_collections.ConfigDict) -> None:
  """Minutes on a 2-core CPU: a small RRDB, pixel pre-trained (`psnr_demo`), then the GAN phase (`demo`)."""
  c.total_steps = 1000
  c.batch_size = 8
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.data.crop_size = 64
  c.generator.update(num_feat=32, num_block=2, num_grow_ch=16, bicubic_residual=True)
  if not common.in_stage(c, "psnr"):
    c.generator.init_from = PSNR_RUNS["demo"]
    c.discriminator.update(num_feat=16, input_size=64)
    # No VGG19 weights are shipped, so the demo's GAN phase has no perceptual term. In ESRGAN's loss that term,
    # at weight 1, is what holds the output to the photo's content (L1 is only 0.01); without it, RaGAN at 0.005
    # would be half of what is left and draws a crosshatch. The demo gives L1 the perceptual term's weight:
    # L1 1 + RaGAN 0.005, a content term and a light adversarial one, as in ESRGAN's eq. 3 with L1 as the content.
    c.loss.terms.l1 = 1.0
  c.optim.milestones = (500, 750)
  c.loss.terms.perceptual = 0.0
  c.eval.holdout = 1  # rocket.jpg is kept out of training and scored whole at every evaluation.
  # The EMA's horizon is ~1 / (1 - decay) steps; at 0.999 a 1000-step run would still hold a third of its start.
  c.ema_decay = 0.99


def _psnr_demo(c: ml_collections.ConfigDict) -> None:
  """The demo's pixel pre-training: a short run at a higher rate."""
  c.total_steps = 1500
  c.optim.g_learning_rate = 5e-4
  c.optim.milestones = (1000,)


def _bench(c: ml_collections.ConfigDict) -> None:
  """The full networks at the training shape, for throughput measurements."""
  c.total_steps = 20
  c.log_every = 10
  if not common.in_stage(c, "psnr"):
    c.generator.init_from = PSNR_RUNS["bench"]
  c.loss.terms.perceptual = 0.0  # Benchmarks must run without a weights file; the VGG term is timed apart.


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.recipe = "sr_esrgan"
  c.total_steps = 400_000  # train_ESRGAN_x4.yml: total_iter.
  c.batch_size = 16  # batch_size_per_gpu 16 on one GPU.
  c.task.update(scale=4, in_channels=3, out_channels=3, crop_border=4, baseline="bicubic")
  c.data.crop_size = 128  # gt_size 128: LR patches of 32, flipped and rotated (use_flip, use_rot).
  c.degradation = ml_collections.ConfigDict(dict(name="bicubic", scale=4))  # DIV2K's bicubic x4 LR images.
  # RRDBNet, 64 features, 23 blocks, growth 32: 16,697,987 parameters (Wang et al. 2018, section 3.1).
  c.generator = ml_collections.ConfigDict(dict(
      name="rrdb", num_feat=64, num_block=23, num_grow_ch=32, scale=4, init_from=PSNR_RUNS["full"]))
  # VGGStyleDiscriminator for 128 px crops, batch norm after every conv but the first (BasicSR's
  # basicsr/archs/discriminator_arch.py; SRGAN's discriminator, Ledig et al. 2017, Figure 4).
  c.discriminator = ml_collections.ConfigDict(dict(name="vgg_critic", num_feat=64, input_size=128, norm="batch"))
  # Adam 1e-4, betas 0.9 / 0.99 for both networks, halved at 50k, 100k, 200k and 300k steps.
  c.optim.g_learning_rate = 1e-4
  c.optim.d_learning_rate = 1e-4
  c.optim.b1, c.optim.b2 = 0.9, 0.99
  c.optim.g_schedule = c.optim.d_schedule = "step"
  c.optim.milestones = (50_000, 100_000, 200_000, 300_000)
  c.optim.gamma = 0.5
  c.optim.n_critic = 1  # net_d_iters 1.
  c.ema_decay = 0.999
  # L1 0.01 + VGG19 conv5_4 (before the ReLU, L1 distance, ImageNet-normalised input) 1 + RaGAN 0.005
  # (Wang et al. 2018, eq. 3: L_G = L_percep + lambda L_G^Ra + eta L_1 with lambda = 5e-3, eta = 1e-2).
  c.loss.terms = ml_collections.ConfigDict({"l1": 0.01, "perceptual": 1.0})
  c.loss.perceptual.layers = ml_collections.ConfigDict({"conv5_4": 1.0})
  c.loss.perceptual.before_activation = True
  c.loss.perceptual.criterion = "l1"
  c.loss.adversarial = "ragan"
  c.loss.adversarial_weight = 5e-3
  c.loss.gp_weight = 0.0
  c.eval.best_metric = "psnr_y"
  return common.apply_variant(
      c, variant, {"psnr": _psnr, "tiny": _tiny, "demo": _demo, "bench": _bench, "psnr_demo": _psnr_demo})
