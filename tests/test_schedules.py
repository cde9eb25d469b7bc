import numpy as np
import pytest

from faceaging import schedules


def test_utk14_maps_original_groups():
    s = schedules.get_schedule("utk14")
    assert s.num_groups == 14
    np.testing.assert_array_equal(s.group_of([0, 5, 6, 30, 31, 40, 41, 100, 101, 116]),
                                  [0, 0, 1, 5, 6, 6, 7, 12, 13, 13])
    assert s.labels[0] == "0-5" and s.labels[-1] == "101+"


@pytest.mark.parametrize("name,groups", [("utk14", 14), ("caae10", 10), ("lats6", 6), ("ipcgan5", 5)])
def test_named_schedules(name, groups):
    assert schedules.get_schedule(name).num_groups == groups


def test_gaps_map_to_minus_one():
    s = schedules.get_schedule("lats6")
    np.testing.assert_array_equal(s.group_of([2, 3, 10, 14, 15, 25, 69, 70]), [0, 1, -1, -1, 3, -1, 5, -1])


def test_custom_schedule_and_open_end():
    s = schedules.get_schedule([[0, 19], [20, 39], [40, None]])
    np.testing.assert_array_equal(s.group_of([0, 19, 20, 40, 116]), [0, 0, 1, 2, 2])
    assert s.labels == ("0-19", "20-39", "40+")
    assert s.representative_age(1) == 29


@pytest.mark.parametrize("ranges,message", [
    ([], "empty"),
    ([[0, 10], [5, 20]], "overlap"),
    ([[20, 30], [0, 10]], "unsorted"),
    ([[-1, 10]], "non-negative"),
    ([[10, 5]], "empty range"),
    ([[0, 1, 2]], r"expected \[lo, hi\]"),
    ([[0.5, 3]], "integers"),
])
def test_invalid_schedules_raise_clear_errors(ranges, message):
    with pytest.raises(schedules.ScheduleError, match=message):
        schedules.get_schedule(ranges)


def test_schedule_from_string():
    s = schedules.get_schedule("0-9, 10-19,20+")
    assert s.ranges == schedules.get_schedule([[0, 9], [10, 19], [20, None]]).ranges
    assert s.labels == ("0-9", "10-19", "20+")
    with pytest.raises(schedules.ScheduleError, match="cannot read range '10_19'"):
        schedules.get_schedule("0-9,10_19")
    with pytest.raises(schedules.ScheduleError, match="overlap"):
        schedules.get_schedule("0-10,5-20")


def test_unknown_name():
    with pytest.raises(schedules.ScheduleError, match=r"cannot read range 'utk15'; expected a name in \['caae10'"):
        schedules.get_schedule("utk15")


def test_negative_age_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        schedules.get_schedule("utk14").group_of([-3])
