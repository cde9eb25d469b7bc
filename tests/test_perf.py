"""Work accounting used by the benchmarks: FLOPs from XLA, device peaks, MFU."""

import types

import jax
import jax.numpy as jnp
import numpy as np

from faceaging import config as config_lib, perf, steps
from helpers import abstract_step_inputs


def test_flops_of_a_matmul_and_a_convolution_are_counted_exactly():
    a = jax.ShapeDtypeStruct((64, 32), jnp.float32)
    b = jax.ShapeDtypeStruct((32, 16), jnp.float32)
    assert perf.flops(jax.jit(jnp.matmul).lower(a, b)) == 2 * 64 * 32 * 16
    x = jax.ShapeDtypeStruct((2, 10, 10, 3), jnp.float32)
    w = jax.ShapeDtypeStruct((4, 4, 3, 8), jnp.float32)
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # XLA counts the multiply-adds of kernel taps inside the image: all of them with VALID.
    assert perf.flops(jax.jit(conv).lower(x, w)) == 2 * 2 * 7 * 7 * 3 * 8 * 16


def test_peaks_match_device_kinds_and_mfu_uses_them():
    h200 = types.SimpleNamespace(device_kind="NVIDIA H200")
    assert perf.peak_tflops(h200, "bfloat16") == 989.0
    assert perf.peak_tflops(types.SimpleNamespace(device_kind="TPU v5 lite"), "bfloat16") == 197.0
    assert perf.peak_tflops(types.SimpleNamespace(device_kind="cpu"), "float32") is None
    r = perf.rates(989e12 * 0.5, 1.0, h200, "bfloat16", num_devices=1)
    assert r["tflop"] == 989 * 0.5 and np.isclose(r["mfu"], 0.5)
    assert np.isclose(perf.rates(989e12, 1.0, h200, "bfloat16", num_devices=2)["mfu"], 0.5)


def test_the_step_with_r1_costs_more_than_without_and_lazy_counts_the_costlier_branch():
    config = config_lib.tiny(config_lib.base_config())
    optimizers, graphs, abstract, batch = abstract_step_inputs(config, 14)
    count = lambda r1: perf.flops(jax.jit(steps.make_train_step(config, graphs, optimizers, 14, r1=r1))
                                  .lower(abstract, batch))
    never, always, lazy = count("never"), count("always"), count("lazy")
    assert never < always
    assert np.isclose(lazy, always, rtol=0.01)
