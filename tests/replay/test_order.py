"""Logs set in time order as they are read: a line a little out of place takes its
place; one far out of place still comes, and is counted."""

from __future__ import annotations

from smtp_balancer.replay.order import in_time_order, merged


def test_lines_a_little_out_of_order_are_set_right():
    times = [0.0, 2.0, 1.0, 3.0, 12.5, 11.0, 30.0]
    late: list[float] = []
    assert list(in_time_order(times, float, late.append)) == sorted(times) and late == []


def test_a_line_further_out_than_the_slack_still_comes_and_is_counted():
    times = [0.0, 1.0, 20.0, 40.0, 5.0, 41.0]
    late: list[float] = []
    out = list(in_time_order(times, float, late.append, slack_s=10.0))
    assert sorted(out) == sorted(times) and late == [5.0]


def test_only_the_slack_is_held():
    held_most = 0

    def source():
        nonlocal held_most
        for k in range(10_000):
            yield k * 0.1
            held_most = max(held_most, k - emitted)

    emitted = 0
    for _ in in_time_order(source(), float, lambda t: None, slack_s=10.0):
        emitted += 1
    assert emitted == 10_000 and held_most <= 102  # 10 s of lines at ten a second


def test_logs_are_merged_by_time_whatever_order_they_are_given_in():
    rotated, current = iter([1.0, 2.0, 3.0]), iter([4.0, 5.0])
    assert list(merged([current, rotated], float)) == [1.0, 2.0, 3.0, 4.0, 5.0]
