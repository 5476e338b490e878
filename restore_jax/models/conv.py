"""2-D convolutions whose gradients, and gradients of gradients, XLA:CPU runs fast.

Why: XLA:CPU sends a stride-1 convolution and its input gradient to Eigen's spatial convolution (~55 GFLOP/s on
a 2-core CPU at ESRGAN's shapes), but the kernel gradient becomes a convolution whose window is the whole image
and whose contracted features are the batch (4 images): ~4 GFLOP/s. A strided convolution is worse: its input
gradient dilates the input (lhs dilation), which XLA:CPU lowers to a plain loop, and WGAN-GP's penalty
differentiates through that gradient once more (Gulrajani et al. 2017, eq. 3). Here:

- a stride-s convolution whose kernel side is a multiple of s is the same function as a space-to-depth of the
  padded input by s followed by a stride-1 convolution with the kernel rearranged to match, so it and all its
  derivatives are stride-1 convolutions and reshapes;
- a stride-1 convolution has its own VJP: the input gradient is this convolution again (flipped, transposed
  kernel), so second derivatives stay on the fast path, and the kernel gradient contracts over images and
  positions as matrix products (one per kernel tap, or one for all taps), or stays XLA's own where that is
  faster (`kernel_gradient_method`).

Other backends (GPU, TPU) have fast native convolution gradients: there `conv2d` is `lax.conv_general_dilated`.
`Conv` is `flax.linen.Conv` with the same parameters ("kernel" HWIO and "bias", same initialisers, same names),
so checkpoints and weight conversions are unchanged.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Padding = str | Sequence[tuple[int, int]]
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
IMPLEMENTATIONS = ("auto", "native", "matmul")


def _explicit_padding(padding: Padding, spatial: Sequence[int], kernel: Sequence[int],
                      strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(spatial, kernel, strides, padding.upper()))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def native_conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding: Padding) -> jax.Array:
  """XLA's convolution, NHWC x HWIO -> NHWC, differentiated by JAX's own rules."""
  return lax.conv_general_dilated(x, kernel, tuple(strides), padding, dimension_numbers=_DIMENSIONS)


KERNEL_GRADIENTS = ("per_tap", "stacked", "native")


def kernel_gradient_method(out_pixels: int, c_in: int, c_out: int) -> str:
  """Which way `_kernel_gradient` computes a 3x3 or 2x2 kernel gradient with `out_pixels` output positions per
  image, chosen from kernel gradients timed at every shape of an RRDB 6x64 / VGG-critic WGAN-GP step (batch 4,
  128 px) on a 2-core x86 CPU with AVX-512 (XLA's own also won at 128x128 on an AVX2 one):

  - XLA's own kernel gradient (a convolution over the batch) is fastest once the images are large and neither
    side is thin: 1.7-2.5x the per-tap products at 64x64 and 128x128 with 64 or more channels on both sides;
  - stacked windows (one product with all taps side by side) win where one side is thin (3 channels: 2.5-4x),
    since a product with 3 output columns leaves the matrix unit idle, and on the critic's small, wide layers;
  - per-tap products win on the RRDB trunk's 32x32 layers with 32 output channels (1.4-3x XLA's).
  """
  thin = min(c_in, c_out)
  if thin <= 16:
    return "stacked"
  if out_pixels >= 64 * 64:
    return "native"
  if out_pixels <= 20 * 20 and thin >= 256:
    return "stacked"
  return "per_tap"


def _kernel_gradient(x: jax.Array, g: jax.Array, kernel_shape: Sequence[int],
                     padding: tuple[tuple[int, int], ...], method: str | None = None) -> jax.Array:
  """d(loss)/d(kernel) of a stride-1 convolution: for each tap t, the sum over images and positions p of
  x_padded[p + t]^T g[p].

  `method` (default: `kernel_gradient_method`'s choice for the shape):
  - "per_tap": one matrix product per tap;
  - "stacked": the shifted windows side by side, then one product for all taps;
  - "native": XLA's transposed convolution.
  The shifted windows are slices (copies) of whichever of x and g has fewer channels: the copies are the cost
  that is not a matrix product. Per tap, the unshifted operand is the product's left side and the window its
  right, both read in their own position-major layout: XLA:CPU then runs a transposed-left product with no further
  copy, where the other order made it transpose every window first (~1.5-2x slower at 128x128x64).
  """
  kh, kw = kernel_shape[:2]
  (top, bottom), (left, right) = padding
  height, width = x.shape[1:3]
  out_height, out_width = g.shape[1:3]
  c_in, c_out = x.shape[-1], g.shape[-1]
  method = method or kernel_gradient_method(out_height * out_width, c_in, c_out)
  if method not in KERNEL_GRADIENTS:
    raise ValueError(f"kernel gradient method must be one of {list(KERNEL_GRADIENTS)}, got {method!r}.")
  if method == "native":
    zeros = jnp.zeros((kh, kw, c_in, c_out), x.dtype)
    _, pullback = jax.vjp(lambda k: native_conv2d(x, k, (1, 1), padding), zeros)
    return pullback(g)[0]
  contract = (((0, 1, 2), (0, 1, 2)), ((), ()))

  if c_in <= c_out:  # Shift the input: the window of tap t over the padded input.
    padded = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
    windows = [padded[:, i:i + out_height, j:j + out_width, :] for i in range(kh) for j in range(kw)]
    if method == "stacked":  # [w_0 | w_1 | ...]^T g, already in HWIO order.
      out = lax.dot_general(jnp.concatenate(windows, -1), g, contract, preferred_element_type=jnp.float32)
      return out.reshape(kh, kw, c_in, c_out)
    # Transposed once, after stacking: a transpose of each tap is folded into its product by XLA, which then
    # swaps the operands and copies g transposed.
    taps = [lax.dot_general(g, w, contract, preferred_element_type=jnp.float32) for w in windows]
    return jnp.stack(taps).reshape(kh, kw, c_out, c_in).swapaxes(2, 3)
  # Shift the output gradient instead: g moved by -t, seen at the input's positions.
  big = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), (kh - 1, kh - 1, 0), (kw - 1, kw - 1, 0), (0, 0, 0)))
  windows = [big[:, top - i + kh - 1:top - i + kh - 1 + height, left - j + kw - 1:left - j + kw - 1 + width, :]
             for i in range(kh) for j in range(kw)]
  if method == "stacked":  # x^T [w_0 | w_1 | ...]: (c_in, taps x c_out).
    out = lax.dot_general(x, jnp.concatenate(windows, -1), contract, preferred_element_type=jnp.float32)
    return out.reshape(c_in, kh, kw, c_out).transpose(1, 2, 0, 3)
  taps = [lax.dot_general(x, w, contract, preferred_element_type=jnp.float32) for w in windows]
  return jnp.stack(taps).reshape(kh, kw, c_in, c_out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _stride1_conv(x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], ...]) -> jax.Array:
  return native_conv2d(x, kernel, (1, 1), padding)


def _stride1_forward(x, kernel, padding):
  return _stride1_conv(x, kernel, padding), (x, kernel)


def _stride1_backward(padding, residuals, g):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  (top, bottom), (left, right) = padding
  # The input gradient is the full correlation of g with the flipped kernel (inputs and outputs swapped),
  # itself a stride-1 convolution: its own derivatives take this path again.
  flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
  dx = _stride1_conv(g, flipped, ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)))
  dkernel = _kernel_gradient(x, g, kernel.shape, padding).astype(kernel.dtype)
  return dx.astype(x.dtype), dkernel


_stride1_conv.defvjp(_stride1_forward, _stride1_backward)


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
  """(N, H, W, C) -> (N, H/b, W/b, b*b*C); channel order (row in block, column in block, channel)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // block, w // block, block * block * c)


def _strided_as_stride1(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                        padding: tuple[tuple[int, int], ...]) -> jax.Array:
  """A stride-s conv with a kernel of side k = m*s, as space-to-depth by s and an m x m stride-1 conv.

  Output position p reads padded rows s*p .. s*p + k - 1, i.e. blocks p .. p + m - 1 of the padded input cut
  into s x s blocks; tap (a, dy) of the new kernel is tap s*a + dy of the old one.
  """
  s = strides[0]
  kh, kw, cin, cout = kernel.shape
  (top, bottom), (left, right) = padding
  height, width = x.shape[1:3]
  out_h = (height + top + bottom - kh) // s + 1
  out_w = (width + left + right - kw) // s + 1
  mh, mw = kh // s, kw // s
  # Pad (or crop) the bottom and right so the padded input is exactly the blocks the output reads.
  bottom = s * (out_h + mh - 1) - height - top
  right = s * (out_w + mw - 1) - width - left
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
  blocks = space_to_depth(x, s)
  k = kernel.reshape(mh, s, mw, s, cin, cout).transpose(0, 2, 1, 3, 4, 5).reshape(mh, mw, s * s * cin, cout)
  # The blocks need no padding, but XLA:CPU ran this convolution 2-2.5x faster padded than unpadded (64x64 and
  # 32x32 outputs, 2-core x86): one more row and column of output on top and left, dropped, costs ~3%.
  return _stride1_conv(blocks, k, ((1, 0), (1, 0)))[:, 1:, 1:, :]


def use_matmul_gradients(implementation: str = "auto") -> bool:
  """Whether `conv2d` takes the rewritten path: "auto" does on the CPU backend only."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"conv implementation must be one of {list(IMPLEMENTATIONS)}, got {implementation!r}.")
  if implementation == "auto":
    return jax.default_backend() == "cpu"
  return implementation == "matmul"


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1), padding: Padding = "SAME",
           implementation: str = "auto") -> jax.Array:
  """NHWC x HWIO -> NHWC, the function `lax.conv_general_dilated` computes, with fast CPU gradients."""
  strides = tuple(int(s) for s in strides)
  pads = _explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides)
  if not use_matmul_gradients(implementation):
    return native_conv2d(x, kernel, strides, pads)
  if strides == (1, 1):
    return _stride1_conv(x, kernel, pads)
  s = strides[0]
  if strides[1] == s and kernel.shape[0] % s == 0 and kernel.shape[1] % s == 0:
    return _strided_as_stride1(x, kernel, strides, pads)
  return native_conv2d(x, kernel, strides, pads)


class Conv(nn.Module):
  """`flax.linen.Conv` (2-D, no dilation or groups) computed with `conv2d`; the same parameters and names.

  Attributes:
    features: output channels.
    kernel_size: (height, width) of the kernel.
    strides: (height, width) strides.
    padding: "SAME", "VALID" or ((top, bottom), (left, right)).
    use_bias: add a learned bias.
    dtype: computation dtype (None: that of the inputs and parameters); parameters stay `param_dtype`.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros_init()
  implementation: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv2d(x, kernel, self.strides, self.padding, self.implementation)
    if bias is not None:
      y = y + bias
    return y
