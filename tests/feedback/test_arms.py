"""What one delivery adds to its experiment arm's hash, and which arm records count."""

from __future__ import annotations

from dataclasses import replace

import pytest

from smtp_balancer.feedback.arms import outcome_fields, read_arm_record
from smtp_balancer.feedback.delivery_log import Delivery

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


@pytest.mark.parametrize(
    ("raw", "record"),
    [("ab a", ("ab", "a")), (b"ab b", ("ab", "b")), ("ab", None), (" a", None), ("ab ", None), (None, None)],
)
def test_an_arm_record_is_an_experiment_and_an_arm(raw: object, record: tuple[str, str] | None) -> None:
    assert read_arm_record(raw) == record
