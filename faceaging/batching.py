"""Fixed-size batches: the one padding scheme (zero rows appended, results cut back)."""

from __future__ import annotations

import numpy as np


def pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
    """``x`` with zero rows appended along axis 0 until its length is a multiple of ``multiple``."""
    missing = -len(x) % multiple
    if not missing:
        return x
    return np.concatenate([x, np.zeros((missing, *x.shape[1:]), x.dtype)])


def map_in_batches(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``fn`` over batches of exactly ``batch_size`` rows of ``x`` (the last padded), so a jitted
    ``fn`` compiles once; returns the results of the real rows, concatenated."""
    out = [np.asarray(fn(pad_rows(x[i:i + batch_size], batch_size)))[:len(x[i:i + batch_size])]
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)
