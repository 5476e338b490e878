"""Reconstruction loss terms by name: `loss.terms = {"l1": 1.0, "ms_ssim": 0.84, ...}` in a recipe.

A term is built from the recipe's loss config and is `fn(restored, target, frozen) -> scalar` on NHWC images in
[0, 1]; `frozen` holds the parameters of fixed networks (VGG19 for the perceptual term) that arrive as a step
argument, so that their weights are not baked into the compiled program. Adding a term is a function and a
`@register_term` line, here or in a module named in `config.imports`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from restore_jax.losses import color, pixel, ssim

TermFn = Callable[[jax.Array, jax.Array, Mapping[str, Any]], jax.Array]


@dataclasses.dataclass(frozen=True)
class Term:
  fn: TermFn
  frozen: tuple[str, ...] = ()  # Names of the fixed networks it needs (keys of FROZEN_NETWORKS).


TermFactory = Callable[[Any], Term]  # The recipe's `loss` config -> Term.
TERMS: dict[str, TermFactory] = {}
# name -> loader(loss config) -> (flax module, params) for the fixed networks terms use.
FROZEN_NETWORKS: dict[str, Callable[[Any], tuple[Any, Any]]] = {}


def register_term(name: str) -> Callable[[TermFactory], TermFactory]:
  def register(factory: TermFactory) -> TermFactory:
    TERMS[name] = factory
    return factory
  return register


def make_terms(loss_config: Any) -> dict[str, tuple[float, Term]]:
  """{name: (weight, term)} for every term with a non-zero weight in `loss_config.terms`."""
  chosen = {}
  for name, weight in dict(loss_config.terms).items():
    if name not in TERMS:
      raise ValueError(f"Unknown loss term loss.terms.{name}; known terms: {sorted(TERMS)}.")
    weight = float(weight)
    if weight < 0:
      raise ValueError(f"loss.terms.{name} must be a weight >= 0, got {weight}.")
    if weight > 0:
      chosen[name] = (weight, TERMS[name](loss_config))
  return chosen


def load_frozen(terms: Mapping[str, tuple[float, Term]], loss_config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
  """({name: module}, {name: params}) of every fixed network the chosen terms need, loaded once."""
  modules, params = {}, {}
  for _, term in terms.values():
    for name in term.frozen:
      if name not in modules:
        modules[name], params[name] = FROZEN_NETWORKS[name](loss_config)
  return modules, params


def _pixel(fn: Callable[[jax.Array, jax.Array], jax.Array]) -> TermFactory:
  return lambda loss_config: Term(lambda restored, target, frozen: fn(restored, target))


for _name, _fn in (("l1", pixel.l1), ("mse", pixel.mse), ("charbonnier", pixel.charbonnier)):
  TERMS[_name] = _pixel(_fn)


@register_term("ms_ssim")
def ms_ssim(loss_config: Any) -> Term:
  """1 - MS-SSIM (Zhao et al. 2017), options in loss.ms_ssim: scales, window_size, sigma."""
  options = dict(loss_config.get("ms_ssim") or {})
  unknown = sorted(set(options) - {"scales", "window_size", "sigma"})
  if unknown:
    raise ValueError(f"loss.ms_ssim has no option(s) {unknown}; it takes scales, window_size and sigma.")
  return Term(lambda restored, target, frozen: ssim.ms_ssim_loss(restored, target, **options))


@register_term("cosine")
def cosine(loss_config: Any) -> Term:
  """1 - cosine similarity of RGB vectors per pixel: keeps colours where SSIM-like terms do not."""
  del loss_config
  return Term(lambda restored, target, frozen: color.cosine_loss(restored, target))


@register_term("perceptual")
def perceptual(loss_config: Any) -> Term:
  """VGG19 feature distances (SRGAN / ESRGAN), options in loss.perceptual."""
  from restore_jax.losses import perceptual as perceptual_lib  # pylint: disable=g-import-not-at-top
  from restore_jax.models import vgg19  # pylint: disable=g-import-not-at-top

  pc = loss_config.perceptual
  layer_weights = dict(pc.layers)
  module = vgg19.VGG19Features(layers=tuple(layer_weights), before_activation=pc.before_activation)

  def fn(restored, target, frozen):
    features_fn = lambda x: module.apply({"params": frozen["vgg19"]}, x)
    return perceptual_lib.perceptual_loss(features_fn, restored, target, layer_weights=layer_weights,
                                          criterion=pc.criterion)

  return Term(fn, frozen=("vgg19",))


def _load_vgg19(loss_config: Any) -> tuple[Any, Any]:
  """VGG19 weights, looked up before training starts so a missing file stops the run at once."""
  from restore_jax.models import vgg19, vgg19_weights  # pylint: disable=g-import-not-at-top

  pc = loss_config.perceptual
  params = vgg19_weights.load_vgg19_params(pc.weights)
  return vgg19.VGG19Features(layers=tuple(dict(pc.layers)), before_activation=pc.before_activation), params


FROZEN_NETWORKS["vgg19"] = _load_vgg19
