"""Generators and discriminators by name, so a recipe picks its networks in config.

Adding a model is adding a file and one line in GENERATORS or DISCRIMINATORS.
"""

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from restore_jax.models.patchgan import PatchGAN
from restore_jax.models.rrdb import RRDBNet
from restore_jax.models.translator import ImageTranslator
from restore_jax.models.unet import UNetGenerator
from restore_jax.models.unet_sn import UNetDiscriminatorSN
from restore_jax.models.vgg19 import VGG19Features
from restore_jax.models.vgg_critic import VGGCritic

GENERATORS: dict[str, type[nn.Module]] = {
    "rrdb": RRDBNet,
    "unet": UNetGenerator,
    "translator": ImageTranslator,
}
DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "vgg_critic": VGGCritic,
    "patchgan": PatchGAN,
    "unet_sn": UNetDiscriminatorSN,
}


# Keys of `generator` that say where its weights start, not what it is (restore_jax.train reads them).
NOT_ARCHITECTURE = ("init_from", "init_from_ema")


def _build(registry: dict[str, type[nn.Module]], kind: str, config: Mapping[str, Any]) -> nn.Module:
  """`config.name` picks the class; every other key is a constructor argument."""
  kwargs = {k: v for k, v in config.items() if k not in NOT_ARCHITECTURE}
  name = kwargs.pop("name", None)
  if name not in registry:
    raise ValueError(f"Unknown {kind} name {name!r}; known {kind}s: {sorted(registry)}. Set {kind}.name.")
  cls = registry[name]
  fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f"{kind} {name!r} has no option(s) {unknown}; it takes {sorted(fields)}.")
  if isinstance(kwargs.get("dtype"), str):  # Configs spell dtypes as strings, e.g. "bfloat16".
    kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
  return cls(**kwargs)


def make_generator(config: Mapping[str, Any]) -> nn.Module:
  """The generator named by `config.name` (e.g. "rrdb"), built with the config's other keys."""
  return _build(GENERATORS, "generator", config)


def make_discriminator(config: Mapping[str, Any]) -> nn.Module:
  """The discriminator named by `config.name` (e.g. "vgg_critic"), built with the config's other keys."""
  return _build(DISCRIMINATORS, "discriminator", config)


__all__ = [
    "DISCRIMINATORS", "GENERATORS", "ImageTranslator", "PatchGAN", "RRDBNet", "UNetDiscriminatorSN",
    "UNetGenerator", "VGG19Features", "VGGCritic", "make_discriminator", "make_generator",
]
