"""Work and speed accounting: FLOPs of compiled computations, device peaks, memory, timing.

Used by the benchmarks and the train loop's logs. FLOPs come from XLA's cost analysis of the
compiled executable (what the device is asked to do, backward passes included), so they count
our own extra work too; MFU is achieved FLOP/s over the device's dense peak for the compute dtype.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

# Dense (no sparsity) peak matrix rates in TFLOP/s by device kind and compute dtype, from the
# vendors' datasheets. float32 on NVIDIA is the TF32 tensor-core rate XLA uses for f32 matmuls
# and convolutions by default. Matching is by substring of ``device.device_kind``, longest first.
PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float32": 494.0},
    "H100": {"bfloat16": 989.0, "float32": 494.0},  # SXM; the PCIe part is lower (756 / 378)
    "A100": {"bfloat16": 312.0, "float32": 156.0},
    "L4": {"bfloat16": 121.0, "float32": 60.0},
    "TPU v4": {"bfloat16": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0},
    "TPU v5e": {"bfloat16": 197.0},
    "TPU v5p": {"bfloat16": 459.0},
    "TPU v5": {"bfloat16": 459.0},
    "TPU v6 lite": {"bfloat16": 918.0},
    "TPU v6e": {"bfloat16": 918.0},
}


def peak_tflops(device: jax.Device, dtype: str) -> float | None:
    """The device's dense peak for ``dtype`` (TFLOP/s), or None when unknown (e.g. CPUs)."""
    kind = device.device_kind
    for name in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if name.lower() in kind.lower():
            return PEAK_TFLOPS[name].get(str(dtype))
    return None


def flops(lowered) -> float | None:
    """FLOPs of one call of a lowered computation (``jax.jit(f).lower(...)``), by XLA's cost
    analysis of the program before optimisation and partitioning: the whole (global) batch's
    work, convolutions included on every backend (after optimisation GPU convolutions become
    library calls that the analysis does not count). A ``lax.cond`` counts its costliest branch.
    None where the backend offers no analysis.
    """
    try:
        analysis = lowered.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per executable
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def compiled_memory_bytes(compiled) -> int | None:
    """Device memory one call needs by the compiler's plan: arguments + outputs + temporaries."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def peak_memory_bytes(device: jax.Device) -> int | None:
    """The allocator's high-water mark on ``device`` (GPU/TPU), or None where not reported."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


@dataclasses.dataclass
class Timing:
    """Per-call wall times (seconds) of a timed loop."""
    seconds: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.seconds))

    @property
    def median(self) -> float:
        return float(np.median(self.seconds))


def compile_timed(jitted, *args):
    """(lowered, compiled executable, seconds to lower and compile) for ``jitted`` at ``args``."""
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    compiled = lowered.compile()
    return lowered, compiled, time.perf_counter() - start


def time_calls(fn, count: int) -> Timing:
    """Calls ``fn()`` ``count`` times, blocking on each result; the wall time of each call."""
    seconds = []
    for _ in range(count):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        seconds.append(time.perf_counter() - start)
    return Timing(seconds)


def rates(flops_per_call: float | None, seconds: float, device: jax.Device, dtype: str,
          num_devices: int = 1) -> dict:
    """TFLOP per call, achieved TFLOP/s over all devices, and MFU against ``num_devices`` peaks
    (None where unknown)."""
    if flops_per_call is None:
        return {"tflop": None, "tflops": None, "mfu": None}
    achieved = flops_per_call / seconds / 1e12
    peak = peak_tflops(device, dtype)
    return {"tflop": flops_per_call / 1e12, "tflops": achieved,
            "mfu": achieved / (peak * num_devices) if peak else None}
