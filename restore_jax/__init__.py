"""restore_jax: training, evaluating and serving image-restoration GANs in JAX."""

from restore_jax import xla_cpu

# Before any backend starts (importing JAX does not start one): XLA reads XLA_FLAGS once.
xla_cpu.disable_ynn_fusions()
