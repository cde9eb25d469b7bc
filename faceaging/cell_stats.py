"""Means over (input, target group) cells, with bootstrap 95% confidence intervals over identities.

Evaluation ages every input to every group; each (input, target) pair is a *cell*. Cells where
the target is the input's own group are left out of every mean (aging a face to its own group
is easy and would flatter the averages). Cells of one identity are not independent, so the
intervals resample identities (a cluster bootstrap): each bootstrap sample draws identities with
replacement and recomputes the statistic from all their cells.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95
CHILD_MAX_AGE = 17  # a group whose every age is at most this is a child group
ADULT_MIN_AGE = 18  # a group whose every age is at least this is an adult group


def off_diagonal(source_groups: np.ndarray, num_groups: int) -> np.ndarray:
    """(N, K) bool: the cells whose target group differs from the input's group."""
    return np.asarray(source_groups)[:, None] != np.arange(num_groups)[None, :]


def child_groups(schedule) -> np.ndarray:
    return np.array([hi <= CHILD_MAX_AGE for _, hi in schedule.ranges])


def adult_groups(schedule) -> np.ndarray:
    return np.array([lo >= ADULT_MIN_AGE for lo, _ in schedule.ranges])


def adult_child_cells(schedule, source_groups: np.ndarray) -> np.ndarray:
    """(N, K) bool: child inputs aged to an adult group and adult inputs aged to a child group,
    the cells where the head's proportions must change most."""
    child, adult = child_groups(schedule), adult_groups(schedule)
    source = np.asarray(source_groups)
    return ((child[source][:, None] & adult[None, :]) | (adult[source][:, None] & child[None, :]))


def _per_unit(values: np.ndarray, cells: np.ndarray, units: np.ndarray, num_units: int):
    """Per-identity sums of ``values`` and counts over the chosen cells where values are finite."""
    chosen = cells & np.isfinite(values)
    rows = np.broadcast_to(units[:, None], values.shape)[chosen]
    sums = np.bincount(rows, weights=values[chosen], minlength=num_units)
    counts = np.bincount(rows, minlength=num_units).astype(float)
    return sums, counts


def ratio_and_ci(numerator: np.ndarray, denominator: np.ndarray | None, cells: np.ndarray,
                 units, seed: int = 0) -> tuple[float | None, list[float] | None]:
    """(statistic, [low, high]) over ``cells``: the mean of ``numerator`` (denominator None) or
    the ratio of the means of ``numerator`` and ``denominator`` (cells where both are finite).

    ``units`` (N,) names the identity of each input; the interval resamples identities.
    (None, None) when no cell has a value.
    """
    numerator = np.asarray(numerator, float)
    ids, units = np.unique(np.asarray(units), return_inverse=True)
    finite = cells & np.isfinite(numerator)
    if denominator is not None:
        denominator = np.asarray(denominator, float)
        finite &= np.isfinite(denominator)
    num, counts = _per_unit(numerator, finite, units, len(ids))
    den = counts if denominator is None else _per_unit(denominator, finite, units, len(ids))[0]
    if counts.sum() == 0 or den.sum() == 0:
        return None, None
    statistic = float(num.sum() / den.sum())
    present = counts > 0  # identities with at least one chosen cell
    num, den = num[present], den[present]
    n = len(num)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=BOOTSTRAP_SAMPLES)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (weights @ num) / (weights @ den)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return statistic, [float(low), float(high)]


def matrix(values: np.ndarray, source_groups: np.ndarray, num_groups: int) -> list[list]:
    """(K, K) nested list: the mean of ``values`` over the inputs of each source group (rows) aged
    to each target group (columns); None on the diagonal and where a source group has no input."""
    source = np.asarray(source_groups)
    out = []
    for s in range(num_groups):
        row = []
        for t in range(num_groups):
            v = values[source == s, t]
            v = v[np.isfinite(v)]
            row.append(None if s == t or not len(v) else float(v.mean()))
        out.append(row)
    return out
