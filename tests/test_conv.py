"""The models' convolution: XLA's forward, a matmul weight gradient on CPU, same derivatives."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from faceaging import conv

DN = ("NHWC", "HWIO", "NHWC")


def reference(x, w, padding="SAME"):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN)


def ours(x, w, padding="SAME"):
    return conv.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN)


@pytest.mark.parametrize("kernel,padding", [(4, "SAME"), (3, "SAME"), (1, "SAME"), (3, "VALID"),
                                            (2, ((0, 1), (1, 0)))])
def test_values_and_gradients_match_xla(kernel, padding):
    rng = np.random.default_rng(kernel)
    x = jnp.asarray(rng.normal(size=(2, 9, 7, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 5, 6)), jnp.float32)
    target = jnp.asarray(rng.normal(size=reference(x, w, padding).shape), jnp.float32)
    loss = lambda f: lambda x, w: jnp.sum(jnp.tanh(f(x, w, padding)) * target)
    np.testing.assert_allclose(ours(x, w, padding), reference(x, w, padding), rtol=1e-5, atol=1e-5)
    got = jax.grad(loss(ours), argnums=(0, 1))(x, w)
    want = jax.grad(loss(reference), argnums=(0, 1))(x, w)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    # On CPU the weight gradient is computed by matmuls, not by XLA's convolution rule.
    assert "dot_general" in jax.jit(jax.grad(loss(ours), argnums=1)).lower(x, w).as_text()
    assert "dot_general" not in jax.jit(jax.grad(loss(reference), argnums=1)).lower(x, w).as_text()


def test_gradient_of_a_gradient_matches_xla():
    """R1 differentiates D's input gradient w.r.t. D's weights: reverse over reverse."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    w1 = jnp.asarray(rng.normal(size=(4, 4, 3, 4)) * 0.3, jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(3, 3, 4, 2)) * 0.3, jnp.float32)

    def r1(f):
        def penalty(ws):
            d = lambda x: jnp.sum(f(jax.nn.leaky_relu(f(x, ws[0]), 0.2), ws[1]))
            return jnp.sum(jax.grad(d)(x) ** 2)
        return penalty

    for g, r in zip(jax.grad(r1(ours))((w1, w2)), jax.grad(r1(reference))((w1, w2))):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_weight_gradient_is_the_correlation_of_input_and_output_gradient():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(1, 5, 5, 2)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(1, 5, 5, 3)), jnp.float32)
    dw = conv.weight_grad(x, dy, (3, 3, 2, 3), ((1, 1), (1, 1)))
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((3, 3, 2, 3))
    for i in range(3):
        for j in range(3):
            for h in range(5):
                for v in range(5):
                    expected[i, j] += np.outer(xp[0, h + i, v + j], np.asarray(dy)[0, h, v])
    np.testing.assert_allclose(dw, expected, rtol=1e-5, atol=1e-5)


def test_other_convolutions_fall_back_to_xla():
    x = jnp.ones((1, 8, 8, 2))
    w = jnp.ones((3, 3, 2, 2))
    strided = conv.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=DN)
    np.testing.assert_allclose(strided, lax.conv_general_dilated(x, w, (2, 2), "SAME",
                                                                 dimension_numbers=DN))


def test_nnx_conv_takes_the_fast_rule():
    """nnx.Conv passes extra keywords (out_sharding=None): they must not divert it to XLA's rule."""
    from flax import nnx

    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 3)), jnp.float32)

    def kernel_grad(conv_fn):
        graph, state = nnx.split(nnx.Conv(3, 4, (4, 4), conv_general_dilated=conv_fn, rngs=nnx.Rngs(0)))
        f = jax.jit(jax.grad(lambda s: jnp.sum(nnx.merge(graph, s)(x) ** 2)))
        return f(state)["kernel"][...], f.lower(state).as_text()

    ours_grad, ours_text = kernel_grad(conv.conv_general_dilated)
    xla_grad, _ = kernel_grad(lax.conv_general_dilated)
    np.testing.assert_allclose(ours_grad, xla_grad, rtol=1e-4, atol=1e-5)
    assert "dot_general" in ours_text  # the matmul weight gradient, not XLA's convolution rule
