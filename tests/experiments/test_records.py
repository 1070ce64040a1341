"""Arm records (``state/arm_book.py``) and which of them count in the current run."""

from __future__ import annotations

import pytest

from smtp_balancer.experiments.records import counts_in_run, read_arm_record


@pytest.mark.parametrize(
    ("raw", "record"),
    [
        ("ab a 1764000000", ("ab", "a", 1764000000)),
        (b"ab b 0", ("ab", "b", 0)),
        ("ab a", ("ab", "a", None)),  # written before records had a time: counts in every run
        ("ab a 0x10", None),
        ("ab a 1_0", None),
        ("ab a \u0661", None),  # the value grammar: ASCII digits only
        ("ab a ", None),
        ("ab a 1 2", None),
        ("ab", None),
        (" a", None),
        ("ab ", None),
        (None, None),
    ],
)
def test_an_arm_record_is_an_experiment_an_arm_and_a_time(raw: object, record: tuple | None) -> None:
    assert read_arm_record(raw) == record


def test_a_message_decided_before_its_run_began_does_not_count_in_it() -> None:
    record = read_arm_record("ab a 1000")
    assert record is not None
    assert counts_in_run(record, None) and counts_in_run(record, 999.5) and counts_in_run(record, 1000.9)
    assert not counts_in_run(record, 1001)
    assert counts_in_run(read_arm_record("ab a"), 10**12)  # an old record: no time to judge
