"""Defaults every recipe shares, and the variant handling behind `file.py:VARIANT`.

A recipe file calls `base_config()`, fills in its model, losses and data, then hands its variant string to
`apply_variant`, which applies the named overrides it declares. Every key stays overridable from the command line
with `--config.KEY=VALUE`.

A recipe trained in two runs (ESRGAN's PSNR-oriented model first, then the GAN started from it) declares its first
run as a stage: `psnr` is the stage at the full recipe's size, `psnr_tiny`, `psnr_demo` and `psnr_bench` the stage
at the other sizes (the stage's overrides, then the size's, then those of the combined name if the recipe has any).
"""

from collections.abc import Callable, Mapping

import ml_collections

from restore_jax.losses import TERMS
from restore_jax.losses import ssim

SIZES = ("full", "tiny", "demo", "bench")
# Stages a recipe may declare: "psnr" is a reconstruction-only pre-training run (Wang et al. 2018, ESRGAN section
# 3.4: the GAN phase starts from a PSNR-oriented model), chained to the next run with generator.init_from.
STAGES = ("psnr",)
VARIANTS = SIZES + STAGES


def base_config() -> ml_collections.ConfigDict:
  """Keys every recipe has, with safe defaults; a recipe overrides what its source specifies."""
  c = ml_collections.ConfigDict()
  c.recipe = ""
  c.variant = "full"
  c.seed = 0
  c.total_steps = 100_000
  c.batch_size = 16  # Global: split over every device of every process.
  c.log_every = 100
  c.eval_every = 5_000
  c.checkpoint_every = 5_000
  c.keep_checkpoints = 3
  c.num_grid_images = 4  # Images in the input | output | target grid logged every eval_every steps.
  # Python modules imported before anything is built, so that their own degradations, networks or loss terms
  # register themselves by name (e.g. ("my_project.degradations",)). Recorded in config.json, so evaluation and
  # restoration import them too.
  c.imports = ()

  # The task's geometry: the only task knowledge the loop, step, evaluation and restoration read.
  c.task = ml_collections.ConfigDict()
  c.task.scale = 1  # Output size / input size (4 for x4 super-resolution).
  c.task.in_channels = 3  # Channels of the degraded input (1 for colorization).
  c.task.out_channels = 3
  c.task.use_mask = False  # The generator also sees the mask of missing pixels (inpainting).
  c.task.crop_border = -1  # Pixels ignored at every side when scoring; -1 = the scale if > 1 (SR), else 0.
  c.task.baseline = "identity"  # What a model must beat: "bicubic", "identity" or "median".

  c.data = ml_collections.ConfigDict()
  c.data.source = "samples"
  c.data.crop_size = 128  # Side of the clean training crops (the target); the input is crop_size / task.scale.
  c.data.augment = True  # A random flip and multiple of 90 degrees per crop.
  # A random order of the colour channels per crop: the "RGB permutation" of the pixel-space augmentations Yoo et al.
  # 2020 ("Rethinking Data Augmentation for Image Super-resolution") measure for super-resolution. A model trained on
  # a few photos otherwise learns their palette as a prior and shifts the colours of photos unlike them. Not for
  # colorization, whose task is that prior.
  c.data.permute_channels = False
  c.data.num_workers = 0
  c.data.prefetch = 2
  c.data.tfds_data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = ml_collections.FieldReference(None, field_type=str)
  c.data.max_skip_fraction = 0.5  # Stop when more than this fraction of records read so far were unusable.
  c.data.max_image_pixels = 200_000_000  # Larger images are skipped ("huge"), not decoded into memory.

  c.degradation = ml_collections.ConfigDict(dict(name="bicubic", scale=4))

  c.generator = ml_collections.ConfigDict()
  # generator.init_from = "DIR[:STEP]" starts a new run from another run's generator (its EMA weights unless
  # generator.init_from_ema = False), as ESRGAN starts its GAN phase from its PSNR-oriented model.
  c.discriminator = ml_collections.ConfigDict()
  # The discriminator also sees the condition (the input, brought to the target's size, and the mask) beside the
  # image, as pix2pix's does (Isola et al. 2017).
  c.discriminator_conditional = False

  c.optim = ml_collections.ConfigDict()
  c.optim.g_learning_rate = 1e-4
  c.optim.d_learning_rate = 1e-4
  # Schedules by name: "constant", "step" (multiplied by optim.gamma at each of optim.milestones, as ESRGAN does)
  # or "cosine" (to 0 at total_steps); any of them after optim.warmup_steps of linear warm-up. Counted in
  # generator steps for both networks.
  c.optim.g_schedule = "constant"
  c.optim.d_schedule = "constant"
  c.optim.milestones = ()
  c.optim.gamma = 0.5
  c.optim.warmup_steps = 0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8  # Adam's epsilon.
  c.optim.grad_clip_norm = 0.0  # 0 = no clipping.
  c.optim.n_critic = 1  # Discriminator updates per generator update, each on a batch of its own.
  c.ema_decay = 0.999
  # "bfloat16": activations, convolutions and matrix products of both networks in bfloat16 during training;
  # parameters, optimizer state, losses and metrics stay float32 (restore_jax.step).
  c.compute_dtype = "float32"
  # A step with a NaN/Inf loss or gradient leaves the parameters unchanged and is counted; this many in a row
  # stop the run with a checkpoint of the last good state.
  c.max_consecutive_nonfinite = 10

  c.loss = ml_collections.ConfigDict()
  # Reconstruction terms by name with their weights (restore_jax.losses.TERMS); each is logged as g_<name>.
  c.loss.terms = ml_collections.ConfigDict({"mse": 1.0})
  c.loss.adversarial = "wgan_gp"  # restore_jax.losses.OBJECTIVES: wgan, wgan_gp, vanilla, lsgan, hinge, ragan.
  c.loss.adversarial_weight = 1e-3
  c.loss.gp_weight = 10.0  # Gradient penalty on the discriminator (0 = none).
  c.loss.adversarial_start_step = 0  # Reconstruction-only pre-training before the GAN phase.
  c.loss.label_smoothing = 0.0  # One-sided: the discriminator's real target becomes 1 - this.
  c.loss.instance_noise = 0.0  # Std of Gaussian noise on everything the discriminator sees, annealed to 0 ...
  c.loss.instance_noise_steps = 0  # ... linearly over this many steps.
  c.loss.feature_matching = 0.0  # Weight of matching the discriminator's features of real and restored images.
  c.loss.mismatch_weight = 0.0  # Conditional discriminators: weight of mismatched (condition, target) pairs.
  c.loss.perceptual = ml_collections.ConfigDict()  # Options of the "perceptual" term (VGG19 features).
  c.loss.perceptual.layers = ml_collections.ConfigDict({"conv5_4": 1.0})
  c.loss.perceptual.criterion = "mse"
  c.loss.perceptual.before_activation = True
  c.loss.perceptual.weights = ml_collections.FieldReference(None, field_type=str)
  c.loss.ms_ssim = ml_collections.ConfigDict(dict(  # Options of the "ms_ssim" term; the defaults, 3 scales
      # of the 11-px window, fit 64-px crops (restore_jax.losses.ssim has the table of what fits).
      scales=ssim.DEFAULT_SCALES, window_size=ssim.DEFAULT_WINDOW_SIZE, sigma=ssim.DEFAULT_SIGMA))

  # Periodic evaluation on whole images, every eval_every steps, with the code of restore_jax.evaluate.
  c.eval = ml_collections.ConfigDict()
  c.eval.data = ""  # A source ("folder:PATH", "tfds:NAME:SPLIT"); "" = the records held out of data.source.
  c.eval.holdout = 0  # Records of data.source kept out of training for evaluation (used when eval.data = "").
  c.eval.max_images = 16  # At most this many images per evaluation (0 = all).
  c.eval.seed = 0  # Seeds each image's degradation, so every evaluation scores the same inputs.
  c.eval.use_ema = True  # Score the EMA generator (as evaluate.py and restore.py do by default).
  # Metrics: psnr, ssim, ms_ssim, and the perceptual lpips, lpips_vgg, niqe, fid (left out with a warning when
  # their weights are not installed).
  c.eval.metrics = ("psnr", "ssim")
  # Keep the best checkpoint by this mean metric in DIR/best ("" = don't); lower is better for lpips, niqe, fid.
  c.eval.best_metric = "psnr_y"
  # Images go through the generator in tiles of this many input pixels (0 = whole), cross-faded as restore does:
  # device memory is bounded by the tile, whatever the size of the validation images.
  c.eval.tile = 512
  c.eval.tile_overlap = 32

  # Test hooks: never set in a recipe.
  c.debug = ml_collections.ConfigDict()
  c.debug.poison_steps = ()  # Steps whose batch is replaced by NaNs, to exercise the non-finite guard.
  return c


def tiny_schedule(c: ml_collections.ConfigDict) -> None:
  """The run every recipe's `tiny` variant shares: 4 steps of 8 crops of 32 px, logged, evaluated and saved."""
  c.total_steps = 4
  c.batch_size = 8
  c.log_every = 2
  c.eval_every = 4
  c.checkpoint_every = 4
  c.num_grid_images = 2
  c.data.crop_size = 32


def pix2pix(c: ml_collections.ConfigDict, *, patchgan_layers: int) -> None:
  """pix2pix's networks, losses and optimizer (Isola et al. 2017), shared by the recipes built on it.

  - Generator: the U-Net for 256 px: eight halvings, 64 to 512 channels, batch norm, and dropout 0.5 in the three
    decoder blocks nearest the bottleneck (appendix 6.1.1).
  - Discriminator: a conditional PatchGAN with `patchgan_layers` stride-2 layers (3: the 70x70 PatchGAN; 5: the
    286x286 one, appendix 6.1.2). It sees the input beside the real or restored image (section 3.1).
  - Optimizer: Adam, lr 2e-4, betas 0.5 / 0.999, constant (section 3.3). pix2pix halves the discriminator's
    loss; Adam's steps do not depend on a constant scale of the loss, so that is left out.
  - Loss: L1 with lambda = 100 beside the non-saturating GAN loss (eq. 4). pix2pix measures that L1 between images
    in [-1, 1] (its tanh output and normalised targets); here images are in [0, 1], where every L1 distance is
    half as large, so the same balance against the GAN term is a weight of 200.
  - No moving average of the generator.
  """
  c.generator = ml_collections.ConfigDict(dict(
      name="unet", out_ch=3, num_downs=8, num_feat=64, max_feat=512, norm="batch", dropout_rate=0.5,
      dropout_blocks=3, input_residual=False))
  c.discriminator = ml_collections.ConfigDict(dict(name="patchgan", num_feat=64, num_layers=patchgan_layers,
                                                   norm="batch"))
  c.discriminator_conditional = True
  c.optim.g_learning_rate = 2e-4
  c.optim.d_learning_rate = 2e-4
  c.optim.b1, c.optim.b2 = 0.5, 0.999
  c.optim.n_critic = 1
  c.ema_decay = 0.0  # The "EMA" is the generator itself.
  c.loss.terms = ml_collections.ConfigDict({"l1": 200.0})  # pix2pix's 100, on [0, 1] images (above).
  c.loss.adversarial = "vanilla"
  c.loss.adversarial_weight = 1.0
  c.loss.gp_weight = 0.0
  c.eval.metrics = ("psnr", "ssim")
  c.eval.best_metric = "psnr_rgb"


def accepted_variants(overrides: Mapping[str, Callable[[ml_collections.ConfigDict], None]]) -> tuple[str, ...]:
  """The sizes, and for every stage the recipe declares, the stage alone and at each size but full."""
  stages = [s for s in STAGES if s in overrides]
  return SIZES + tuple(stages) + tuple(f"{s}_{size}" for s in stages for size in SIZES[1:])


def in_stage(config: ml_collections.ConfigDict, stage: str) -> bool:
  """Whether the variant being applied is `stage` at some size ("psnr", "psnr_demo", ...)."""
  return config.variant == stage or config.variant.startswith(stage + "_")


def apply_variant(
    config: ml_collections.ConfigDict,
    variant: str | None,
    overrides: Mapping[str, Callable[[ml_collections.ConfigDict], None]],
) -> ml_collections.ConfigDict:
  """Applies the recipe's override functions for `variant` ("" or None = the full recipe).

  "STAGE_SIZE" (e.g. "psnr_demo") applies the stage's overrides, then the size's, then any declared for the
  combined name, so a stage only states what differs from the recipe at every size.
  """
  variant = (variant or "full").strip()
  accepted = accepted_variants(overrides)
  if variant not in accepted:
    raise ValueError(f"Unknown variant {variant!r}; this recipe accepts {', '.join(accepted)}.")
  config.variant = variant
  stage, _, size = variant.partition("_")
  steps = (stage, size, variant) if size else (variant,)
  for name in steps:
    if name in overrides:
      overrides[name](config)
  # Every built-in loss term is listed, at weight 0 (off) where the recipe does not use it: command-line
  # overrides can only set keys that exist, so this is what lets `--config.loss.terms.ms_ssim=0.5` switch one on.
  for name in sorted(TERMS):
    if name not in config.loss.terms:
      config.loss.terms[name] = 0.0
  return config
