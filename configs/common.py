"""Defaults every recipe shares, and the variant handling behind `file.py:VARIANT`.

A recipe file calls `base_config()`, fills in its model, losses and data, then hands its variant string to
`apply_variant`, which applies the named overrides it declares. Every key stays overridable from the command line
with `--config.KEY=VALUE`.
"""

from collections.abc import Callable, Mapping

import ml_collections

VARIANTS = ("full", "tiny", "demo", "bench")


def base_config() -> ml_collections.ConfigDict:
  """Keys every recipe has (DESIGN.md section 2), with safe defaults."""
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
  c.num_grid_images = 4  # Images in the LR | SR | HR grid logged every eval_every steps.

  c.data = ml_collections.ConfigDict()
  c.data.source = "samples"
  c.data.hr_crop = 128
  c.data.augment = True
  c.data.num_workers = 0
  c.data.prefetch = 2
  c.data.tfds_data_dir = ml_collections.FieldReference(None, field_type=str)
  c.data.image_key = ml_collections.FieldReference(None, field_type=str)
  c.data.max_skip_fraction = 0.5  # Stop when more than this fraction of records read so far were unusable.
  c.data.max_image_pixels = 200_000_000  # Larger images are skipped ("huge"), not decoded into memory.

  c.degradation = ml_collections.ConfigDict(dict(name="bicubic", scale=4))

  c.generator = ml_collections.ConfigDict()
  c.discriminator = ml_collections.ConfigDict()

  c.optim = ml_collections.ConfigDict()
  c.optim.g_learning_rate = 1e-4
  c.optim.d_learning_rate = 1e-4
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8  # Adam's epsilon.
  c.optim.warmup_steps = 0
  c.optim.grad_clip_norm = 0.0  # 0 = no clipping.
  c.optim.n_critic = 1  # Critic updates per generator update.
  c.ema_decay = 0.999
  # A step with a NaN/Inf loss or gradient leaves the parameters unchanged and is counted; this many in a row
  # stop the run with a checkpoint of the last good state.
  c.max_consecutive_nonfinite = 10

  c.loss = ml_collections.ConfigDict()
  c.loss.pixel = "mse"
  c.loss.pixel_weight = 1.0
  c.loss.adversarial = "wgan"
  c.loss.adversarial_weight = 1e-3
  c.loss.gp_weight = 10.0
  c.loss.adversarial_start_step = 0  # Pixel(-and-perceptual) pre-training before the GAN phase.
  c.loss.perceptual = ml_collections.ConfigDict()
  c.loss.perceptual.weight = 0.0  # 0 switches the VGG19 term (and its weights file) off.
  c.loss.perceptual.layers = ml_collections.ConfigDict({"conv5_4": 1.0})
  c.loss.perceptual.criterion = "mse"
  c.loss.perceptual.before_activation = True
  c.loss.perceptual.weights = ml_collections.FieldReference(None, field_type=str)

  # Periodic evaluation on whole images, every eval_every steps, with the code of restore_jax.evaluate.
  c.eval = ml_collections.ConfigDict()
  c.eval.data = ""  # A source ("folder:PATH", "tfds:NAME:SPLIT"); "" = the records held out of data.source.
  c.eval.holdout = 0  # Records of data.source kept out of training for evaluation (used when eval.data = "").
  c.eval.max_images = 16  # At most this many images per evaluation (0 = all).
  c.eval.crop_border = -1  # -1 = the degradation's scale, the SR convention.
  c.eval.seed = 0  # Seeds each image's degradation, so every evaluation scores the same inputs.
  c.eval.use_ema = True  # Score the EMA generator (as evaluate.py and restore.py do by default).
  c.eval.best_metric = "psnr_y"  # Keep the best checkpoint by this mean metric in DIR/best ("" = don't).

  # Test hooks: never set in a recipe.
  c.debug = ml_collections.ConfigDict()
  c.debug.poison_steps = ()  # Steps whose batch is replaced by NaNs, to exercise the non-finite guard.
  return c


def apply_variant(
    config: ml_collections.ConfigDict,
    variant: str | None,
    overrides: Mapping[str, Callable[[ml_collections.ConfigDict], None]],
) -> ml_collections.ConfigDict:
  """Applies the recipe's override function for `variant` ("" or None = the full recipe)."""
  variant = (variant or "full").strip()
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
  config.variant = variant
  if variant in overrides:
    overrides[variant](config)
  return config
