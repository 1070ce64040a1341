"""Reputation records on real Redis: newest day wins, the same import twice changes
nothing, the key lives as long as its newest record; an action acts once."""

from __future__ import annotations

from datetime import UTC, date, datetime

from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.reputation import Record, ReputationStore, recent

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


def test_the_same_day_and_value_with_another_detail_changes_nothing(rdb):
    store = ReputationStore(rdb, KEYS, retention_days=14)
    v1 = Record(
        "google",
        "postmaster",
        "spam_ratio",
        date(2026, 12, 5),
        "0.0041",
        domain="shop.test",
        detail="0.0035-0.0047",
    )
    v2 = Record(
        "google", "postmaster", "spam_ratio", date(2026, 12, 5), "0.0041", domain="shop.test", detail="v2"
    )
    assert store.write([v1]) == [v1]
    assert store.write([v2]) == []  # Postmaster Tools v2 saying what v1 said: nothing changes
    assert store.write([v1]) == []
    changed = Record("google", "postmaster", "spam_ratio", date(2026, 12, 5), "0.005", domain="shop.test")
    assert store.write([changed]) == [changed]  # a new value for the day does


def test_the_records_in_force_are_recent_enough_to_act_and_junk_is_skipped(rdb):
    store = ReputationStore(rdb, KEYS, retention_days=14)
    store.write(
        [
            rec(5, "BAD"),
            rec(1, "LOW", "127.0.0.30"),
            Record("google", "postmaster", "spam_ratio", date(2026, 12, 4), "0.002", domain="shop.test"),
        ]
    )
    rdb.hset(KEYS.reputation("out2", "google"), "postmaster:ip_reputation:127.0.0.31", "yesterday BAD")
    rdb.hset(KEYS.domain_reputation("shop.test", "google"), "nosignal", "2026-12-05 BAD")
    held = store.in_force(date(2026, 12, 5), max_age_days=3)
    assert [(r.scope, r.name, r.signal, r.subject, r.day, r.value) for r in held] == [
        ("endpoint", "out2", "ip_reputation", "127.0.0.3", "2026-12-05", "BAD"),
        ("domain", "shop.test", "spam_ratio", "", "2026-12-04", "0.002"),
    ]  # 1 December's is kept but too old to act; the hand-made fields are no records


def test_a_record_is_recent_up_to_max_age_days_and_tomorrow_counts():
    today = date(2026, 11, 24)
    assert recent(date(2026, 11, 21), today, 3)  # exactly max_age_days before
    assert not recent(date(2026, 11, 20), today, 3)
    assert recent(today, today, 0) and not recent(date(2026, 11, 23), today, 0)
    assert recent(date(2026, 11, 25), today, 3)  # tomorrow, which the importer keeps
