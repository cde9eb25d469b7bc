"""Means over target != source cells and their cluster-bootstrap intervals, against known answers."""

import numpy as np
import pytest

from faceaging import cell_stats, schedules

SCHEDULE = schedules.get_schedule("0-9,10-19,20-34,35-49,50-69,70+")


def test_cells_leave_out_own_group_and_find_adult_child_pairs():
    sources = np.array([0, 1, 2, 5])
    other = cell_stats.off_diagonal(sources, 6)
    assert other.sum() == 4 * 5 and not other[np.arange(4), sources].any()
    assert cell_stats.child_groups(SCHEDULE).tolist() == [True, False, False, False, False, False]
    assert cell_stats.adult_groups(SCHEDULE).tolist() == [False, False, True, True, True, True]
    pairs = cell_stats.adult_child_cells(SCHEDULE, sources)
    # a child to 20-34 .. 70+; a teenager to nothing; adults to 0-9 only.
    assert pairs.tolist() == [[False, False, True, True, True, True], [False] * 6,
                              [True, False, False, False, False, False],
                              [True, False, False, False, False, False]]


def test_a_value_on_the_diagonal_changes_no_mean():
    sources = np.array([0, 1, 2, 0, 1, 2])
    values = np.ones((6, 3))
    values[np.arange(6), sources] = 1000.0  # aging to one's own group: left out
    mean, ci = cell_stats.ratio_and_ci(values, None, cell_stats.off_diagonal(sources, 3), np.arange(6))
    assert mean == 1.0 and ci == [1.0, 1.0]
    matrix = cell_stats.matrix(values, sources, 3)
    assert [matrix[i][i] for i in range(3)] == [None] * 3 and matrix[0][1] == 1.0


def test_interval_matches_the_normal_theory_over_identities():
    rng = np.random.default_rng(0)
    identities = 400
    per_identity = rng.normal(10.0, 2.0, identities)
    # Five cells per identity, all equal: five copies must not narrow the interval (the bootstrap
    # resamples identities, not cells).
    values = np.repeat(per_identity, 5)[:, None]
    units = np.repeat(np.arange(identities), 5)
    mean, (low, high) = cell_stats.ratio_and_ci(values, None, np.ones_like(values, bool), units)
    assert mean == pytest.approx(per_identity.mean())
    half_width = 1.96 * per_identity.std() / np.sqrt(identities)
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)
    assert low < mean < high


def test_ratio_of_means_and_missing_values():
    numerator = np.array([[2.0, np.nan], [4.0, 6.0]])
    denominator = np.array([[4.0, 1.0], [4.0, 4.0]])
    cells = np.ones((2, 2), bool)
    ratio, _ = cell_stats.ratio_and_ci(numerator, denominator, cells, np.array([0, 1]))
    assert ratio == pytest.approx(12.0 / 12.0)  # the NaN cell leaves both sums
    assert cell_stats.ratio_and_ci(np.full((2, 2), np.nan), None, cells, np.arange(2)) == (None, None)
