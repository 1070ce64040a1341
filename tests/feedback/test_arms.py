"""What one delivery adds to its experiment arm's hash, and which arm records count."""

from __future__ import annotations

from dataclasses import replace

import pytest

from smtp_balancer.clock import FixedClock
from smtp_balancer.feedback.arms import (
    GRACE_S,
    MOVE_GRACE_S,
    RETRY_S,
    ArmAttribution,
    outcome_fields,
)
from smtp_balancer.feedback.delivery_log import Delivery
from smtp_balancer.state.keys import KeySchema

SENT = Delivery(
    queue_id="AAA1",
    endpoint="out1",
    program="smtp",
    recipient="u@gmail.com",
    relay_host="gmail-smtp-in.l.google.com",
    relay_addr="142.250.1.27",
    relay_port=25,
    delay_s=0.42,
    delays=(0.01, 0.0, 0.2, 0.21),
    dsn="2.0.0",
    status="sent",
    response="250 ok",
    provider="google",
    transfer_s=0.41,
)


@pytest.mark.parametrize(
    ("delivery", "fields"),
    [
        (SENT, ["sent", "lat:0.5"]),
        (replace(SENT, transfer_s=None), ["sent"]),  # Exim without +deliver_time
        (replace(SENT, transfer_s=400.0), ["sent", "lat:inf"]),
        (
            replace(SENT, status="deferred", bounce_class="rate_limited"),
            ["deferred", "class:rate_limited"],
        ),
        (
            replace(SENT, status="bounced", bounce_class="invalid_recipient"),
            ["bounced", "class:invalid_recipient", "bounced:invalid_recipient"],
        ),
        (
            replace(SENT, status="expired", bounce_class="unknown"),
            ["expired", "class:unknown", "bounced:unknown"],
        ),
    ],
)
def test_each_outcome_adds_its_status_class_and_latency(delivery: Delivery, fields: list[str]) -> None:
    assert outcome_fields(delivery) == fields


def test_a_message_moved_before_its_record_was_written_inherits_it_when_it_is(rdb) -> None:
    """The requeue daemon can move a message within a second of its decision, before
    the decider's batch wrote the old id's arm record (seen in a CI run under load):
    the move is asked again until the record is there, for MOVE_GRACE_S. A later CI run
    under heavier load saw a record come more than GRACE_S (a delivery's wait) late."""
    from datetime import UTC, datetime

    clock = FixedClock(datetime(2026, 11, 24, 10, 30, tzinfo=UTC))
    keys = KeySchema()
    arms = ArmAttribution(rdb, keys, {"out1"}, [("ab", "a")], clock)
    assert arms.inherit([("NEW1", "OLD1"), ("NEW2", "OLD2")]) == {}  # neither record yet
    rdb.set(keys.arm_record("OLD1"), "ab a 1796000000")
    assert arms.inherit([]) == {}  # asked again once a second, not at every batch
    clock.advance(RETRY_S)
    assert arms.inherit([]) == {"NEW1": "ab a 1796000000"}
    clock.advance(GRACE_S)
    assert arms.inherit([]) == {} and list(arms.pending_moves) == ["NEW2"]  # still asked
    clock.advance(MOVE_GRACE_S - GRACE_S)
    assert arms.inherit([]) == {} and arms.pending_moves == {}  # asked a last time: dropped
    rdb.set(keys.arm_record("OLD2"), "ab a 1796000001")
    clock.advance(RETRY_S)
    assert arms.inherit([]) == {}  # not asked any more
