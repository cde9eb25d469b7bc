"""The convolution the models use: XLA's, with a faster weight gradient on CPU.

XLA:CPU runs forward and input-gradient convolutions near its matmul speed, but computes the
*weight* gradient of a stride-1 'SAME' convolution 2-10x slower (measured on the 2-core CI
machine for the seed plan's layers: 10-49 GFLOP/s against ~110 for the forward pass). On CPU
``conv_general_dilated`` therefore carries a custom VJP whose weight gradient is a sum of
``kh * kw`` matmuls, one per kernel offset, between the shifted (padded) input and the output
gradient; that runs 2-4x faster and needs no im2col copy. The input gradient is the forward
convolution of the output gradient with the flipped kernel, through this same function, so
second derivatives (R1) stay on these rules as well.
On GPU and TPU the library convolutions are fast and XLA's rule is kept.

Pass it to ``nnx.Conv(conv_general_dilated=...)``: parameters, initialisation and results are
those of a plain ``nnx.Conv``.
"""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")


def _plain(x, w, padding):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_matmul_weight_grad(x, w, padding):
    return _plain(x, w, padding)


def _forward(x, w, padding):
    return _plain(x, w, padding), (x, w)


def weight_grad(x, dy, kernel_shape, padding):
    """d(sum(conv(x, w) * dy))/dw for a stride-1 NHWC/HWIO convolution, as kh*kw matmuls.

    Each is (N*H*W, Cout)^T @ (N*H*W, Cin) on 2-D operands: XLA:CPU runs that form about 4x
    faster than the same contraction written over the three N, H, W axes.
    """
    kh, kw = kernel_shape[:2]
    (top, bottom), (left, right) = padding
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, h, w, cout = dy.shape
    cin = x.shape[-1]
    dy2 = dy.reshape(n * h * w, cout)
    taps = []
    for i in range(kh):
        for j in range(kw):
            patch = lax.slice(xp, (0, i, j, 0), (n, i + h, j + w, cin)).reshape(n * h * w, cin)
            taps.append(lax.dot_general(dy2, patch, (((0,), (0,)), ((), ())),
                                        preferred_element_type=jnp.float32))  # (Cout, Cin)
    return jnp.stack(taps).reshape(kh, kw, cout, cin).transpose(0, 1, 3, 2)


def _backward(padding, residuals, dy):
    x, w = residuals
    # The input gradient is itself a stride-1 convolution of dy with the flipped, transposed
    # kernel; computing it with this function keeps every derivative of it (R1 differentiates
    # D's input gradient w.r.t. D's weights) on the fast rules too. XLA's own transpose rule
    # would leave that second derivative to a naive generated kernel that takes minutes at 200px.
    kh, kw = w.shape[:2]
    (top, bottom), (left, right) = padding
    flipped = jnp.flip(w, (0, 1)).swapaxes(2, 3)
    dx_padding = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
    dx = _conv_matmul_weight_grad(dy, flipped, dx_padding)
    return dx, weight_grad(x, dy, w.shape, padding).astype(w.dtype)


_conv_matmul_weight_grad.defvjp(_forward, _backward)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         **kwargs):
    """``lax.conv_general_dilated``, with the CPU weight-gradient rule where it applies
    (2-D NHWC/HWIO, stride 1, no dilation, one group, default precision)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # e.g. nnx's out_sharding=None
    simple = (jax.default_backend() == "cpu" and lhs.ndim == 4
              and tuple(window_strides) == (1, 1)
              and tuple(lhs_dilation or (1, 1)) == (1, 1) and tuple(rhs_dilation or (1, 1)) == (1, 1)
              and feature_group_count == 1 and batch_group_count == 1 and precision is None
              and preferred_element_type is None and not kwargs
              and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
              == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
    if not simple:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
            batch_group_count=batch_group_count, precision=precision,
            preferred_element_type=preferred_element_type, **kwargs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv_matmul_weight_grad(lhs, rhs, padding)
