"""Reputation records on real Redis: newest day wins, the same import twice changes
nothing, the key lives as long as its newest record; an action acts once."""

from __future__ import annotations

from datetime import UTC, date, datetime

from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.reputation import Record, ReputationStore

KEYS = KeySchema()


def rec(day: int, value: str, ip: str = "127.0.0.3") -> Record:
    return Record(
        "google", "postmaster", "ip_reputation", date(2026, 12, day), value, endpoint="out2", subject=ip
    )


def test_a_record_takes_a_field_only_over_an_older_or_equal_day(rdb):
    store = ReputationStore(rdb, KEYS, retention_days=14)
    assert store.write([rec(3, "LOW")]) == [rec(3, "LOW")]
    assert store.write([rec(3, "LOW")]) == []  # the same again: nothing
    assert store.write([rec(5, "BAD")]) == [rec(5, "BAD")]
    assert store.write([rec(4, "HIGH")]) == []  # older than what is held
    assert rdb.hgetall(KEYS.reputation("out2", "google")) == {
        "postmaster:ip_reputation:127.0.0.3": "2026-12-05 BAD"
    }
    # within one import, a field's newest day is the one written
    assert store.write([rec(7, "HIGH"), rec(6, "BAD")]) == [rec(7, "HIGH")]


def test_the_key_expires_retention_days_after_its_newest_day(rdb):
    store = ReputationStore(rdb, KEYS, retention_days=14)
    store.write([rec(5, "BAD")])
    end = int(datetime(2026, 12, 20, tzinfo=UTC).timestamp())  # 5 December's end + 14 days
    assert rdb.expiretime(KEYS.reputation("out2", "google")) == end
    store.write([rec(4, "BAD", "127.0.0.30")])  # an older day's record: never shortens it
    assert rdb.expiretime(KEYS.reputation("out2", "google")) == end


def test_an_action_acts_once_and_then_is_in_force(rdb):
    store = ReputationStore(rdb, KEYS, retention_days=14)
    first = store.act(
        "google-ip-bad", "out2", "google", "suspend_provider", 86400, 0.5, "reputation rule x: why"
    )
    assert (first.outcome, first.seconds) == ("acted", 86400)
    assert rdb.get(KEYS.suspension("out2", "google")).startswith("reputation rule x: why")
    again = store.act("google-ip-bad", "out2", "google", "suspend_provider", 86400, 0.5, "other")
    assert again.outcome == "in_force"
    assert rdb.get(KEYS.suspension("out2", "google")).startswith("reputation rule x: why")


def test_records_read_back_per_endpoint_and_provider_and_junk_is_left_out(rdb):
    store = ReputationStore(rdb, KEYS, retention_days=14)
    store.write(
        [
            rec(5, "BAD"),
            Record(
                "microsoft", "snds", "blocked", date(2026, 12, 5), "yes", endpoint="out1", subject="127.0.0.2"
            ),
        ]
    )
    rdb.set(KEYS.reputation("out9", "google"), "hand-made, not a hash")
    held = store.endpoint_records()
    assert held == {
        ("out2", "google"): {"postmaster:ip_reputation:127.0.0.3": "2026-12-05 BAD"},
        ("out1", "microsoft"): {"snds:blocked:127.0.0.2": "2026-12-05 yes"},
    }
