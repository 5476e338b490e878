"""Perceptual loss: distances between feature maps of a fixed network (VGG19)."""

from typing import Callable, Mapping

import jax

from restore_jax.losses import pixel

FeaturesFn = Callable[[jax.Array], Mapping[str, jax.Array]]

_CRITERIA = {"mse": pixel.mse, "l1": pixel.l1, "charbonnier": pixel.charbonnier}


def perceptual_loss(
    features_fn: FeaturesFn,
    pred: jax.Array,
    target: jax.Array,
    *,
    layer_weights: Mapping[str, float],
    criterion: str = "mse",
) -> jax.Array:
  """sum_l weight_l * criterion(phi_l(pred), phi_l(target)).

  Matching features rather than pixels lets the generator trade exact pixel
  values for texture that looks right (SRGAN / ESRGAN). The target's features
  are a constant: gradients flow only through pred.

  Args:
    features_fn: images -> {layer name: feature map}, e.g. a closure over a
      VGG19 features module and its (frozen) params.
    pred: generated images, NHWC in [0, 1].
    target: ground-truth images, same shape.
    layer_weights: {layer name: weight}; every name must be a key of the
      features_fn output.
    criterion: "mse", "l1" or "charbonnier", applied per layer.
  """
  if criterion not in _CRITERIA:
    raise ValueError(f"Unknown perceptual criterion {criterion!r}; choose one of {sorted(_CRITERIA)}.")
  if not layer_weights:
    raise ValueError("perceptual_loss needs at least one layer in layer_weights, e.g. {'conv5_4': 1.0}.")
  distance = _CRITERIA[criterion]
  pred_features = features_fn(pred)
  target_features = features_fn(target)
  missing = [name for name in layer_weights if name not in pred_features]
  if missing:
    raise ValueError(
        f"Layers {missing} are not produced by features_fn; it returns {sorted(pred_features)}. "
        "Fix layer_weights or ask features_fn for those layers.")
  return sum(
      weight * distance(pred_features[name], jax.lax.stop_gradient(target_features[name]))
      for name, weight in layer_weights.items())
