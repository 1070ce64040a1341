"""Pins and the counter deltas that keep warm-up counts on the route mail leaves by."""

from __future__ import annotations

from datetime import UTC, datetime

from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.pins import Pin, counter_deltas, parse_pin, pin_mapping, refundable

ENDPOINTS = {"out1": object(), "out2": object()}


def test_pin_round_trip_and_junk() -> None:
    pin = Pin("out1", "google", 3, "suspended for google")
    raw = {k.encode(): v.encode() for k, v in pin_mapping(pin, 100.0).items()}
    assert parse_pin(raw, ENDPOINTS) == pin
    assert parse_pin({b"endpoint": b"gone"}, ENDPOINTS) is None  # an endpoint we do not know
    assert parse_pin({b"endpoint": b"out2", b"units": b"many"}, ENDPOINTS) == Pin("out2", "", 1, "")


def test_counter_deltas_and_what_can_be_given_back() -> None:
    at = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    deltas = counter_deltas(KeySchema(), "out2", "google", -2, at)
    assert deltas == [
        ("{sb}:count:out2:day:20261202", "259200 total -2 google -2"),
        ("{sb}:count:out2:hour:2026120209", "172800 total -2 google -2"),
    ]
    assert counter_deltas(KeySchema(), "out2", "google", 1, at, ("day",))[0][0].endswith("day:20261202")
    now = datetime(2026, 12, 2, 10, 5, tzinfo=UTC)
    same_hour = datetime(2026, 12, 2, 10, 1, tzinfo=UTC).timestamp()
    assert refundable(same_hour, now) == ("day", "hour")
    assert refundable(at.timestamp(), now) == ("day",)  # last hour's counter: no cap reads it now
    assert refundable(datetime(2026, 12, 1, 23, 0, tzinfo=UTC).timestamp(), now) == ()
