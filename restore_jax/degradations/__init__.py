"""Degradations: a clean target image -> the degraded input a generator learns to undo.

`make_degradation(config.degradation)` returns a `Degradation`, called as

    degrade(target, rng) -> {"input": ..., "mask": ...}

on one clean HWC float32 RGB image in [0, 1], drawing all its randomness from the `np.random.Generator` the
data pipeline seeds per sample, so the same (config, target, seed) gives the same output bit for bit, in any
process. `input` is float32 (h, w, c) with h = H / scale and c = 1 for grayscale, 3 otherwise; `mask`
(h, w, 1), 1 = missing pixel, comes only from damage (and chains containing it). `degrade.prepare(photo,
mask=None)` turns a real photo into the model's input without damaging it.

One module per family, each registering itself by name in DEGRADATIONS; docs/degradations.md describes
every family, its keys, defaults and speed.
"""

from __future__ import annotations

# Importing the family modules registers them.
from restore_jax.degradations import (blur, chain, damage, downsample, exposure, grayscale, haze, jpeg, noise,
                                      realistic, shuffle)
from restore_jax.degradations.base import Degradation
from restore_jax.degradations.chain import chain_config, one_of_config
from restore_jax.degradations.registry import (DEGRADATIONS, channels_of, default_config, make_degradation,
                                               register, scale_of)
from restore_jax.degradations.resize import imresize

del blur, chain, damage, downsample, exposure, grayscale, haze, jpeg, noise, realistic, shuffle

__all__ = ["DEGRADATIONS", "Degradation", "chain_config", "channels_of", "default_config", "imresize",
           "make_degradation", "one_of_config", "register", "scale_of"]
