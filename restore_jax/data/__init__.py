"""Data: image sources, decoding, and the grain training pipeline."""

from restore_jax.data.decode import BadImage
from restore_jax.data.decode import to_rgb_float
from restore_jax.data.pipeline import SKIP_REASONS
from restore_jax.data.pipeline import make_train_dataset
from restore_jax.data.pipeline import make_train_iterator
from restore_jax.data.sources import ImageSource
from restore_jax.data.sources import eval_source
from restore_jax.data.sources import holdout_split
from restore_jax.data.sources import make_source
from restore_jax.data.sources import train_source

__all__ = ["BadImage", "ImageSource", "SKIP_REASONS", "eval_source",
           "holdout_split", "make_source", "make_train_dataset",
           "make_train_iterator", "to_rgb_float", "train_source"]
