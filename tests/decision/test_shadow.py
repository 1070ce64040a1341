"""Shadow mode's decider, sans I/O: the candidate's route for the live draw, no lease."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from integration.configs import deep_merge, topology
from integration.statistics import assert_shares
from smtp_balancer.clock import FixedClock
from smtp_balancer.config import validate_config
from smtp_balancer.decision.choice import NeedRedis
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.quota import QuotaBook
from smtp_balancer.decision.shadow import CAP_HELD, ShadowDecider, ShadowEligibility, agrees
from smtp_balancer.state.keys import KeySchema

NOW = datetime(2026, 11, 24, 10, tzinfo=UTC)
LIVE = {"mx_lookup": {"enabled": False}, **topology()}  # out1:out2:out3 at 1:2:1


def facts(i: int) -> Facts:
    return Facts(sender="a@shop.test", recipients=(f"u{i}@gmail.com",), queue_id=f"Q{i}")


def live_and_shadow(candidate: dict, n: int) -> list[tuple[Decision, Decision]]:
    """``n`` messages decided by the live planner (the degraded path: no Redis) and by the
    candidate with each message's live uniform value."""
    live = Planner(validate_config(LIVE), random.Random(7), FixedClock(NOW))
    shadow = ShadowDecider(validate_config(candidate), FixedClock(NOW))
    pairs = []
    for i in range(n):
        draw = live.prepare(facts(i), NOW)
        assert not isinstance(draw, Decision)
        pairs.append((live.degraded(draw, "test", None), shadow.decide(facts(i), draw.r, None, None, NOW)))
    return pairs


def test_the_live_config_as_candidate_agrees_on_every_message():
    pairs = live_and_shadow(LIVE, 2000)
    assert all(agrees(a, b) for a, b in pairs)
    assert {b.reason for _, b in pairs} <= {"weight 1 in pool main", "weight 2 in pool main"}


def test_new_weights_give_their_own_shares_for_the_same_draws():
    candidate = deep_merge(LIVE, {})
    candidate["pools"]["main"]["endpoints"] = [
        {"endpoint": "out1", "weight": 3},
        {"endpoint": "out2", "weight": 1},
    ]
    pairs = live_and_shadow(candidate, 4000)
    assert_shares(Counter(a.endpoint for a, _ in pairs), {"out1": 1, "out2": 2, "out3": 1})
    assert_shares(Counter(b.endpoint for _, b in pairs), {"out1": 3, "out2": 1})
    # the same draw: r below 1/4 is out1 under both
    assert sum(agrees(a, b) for a, b in pairs) < len(pairs)


def test_a_candidate_rule_that_matches_nothing_says_no_rule():
    candidate = deep_merge(LIVE, {})
    candidate["rules"] = [{"name": "only-yahoo", "provider": ["yahoo"], "pool": "main"}]
    ((live, shadow),) = live_and_shadow(candidate, 1)
    assert live.outcome == "route" and shadow.outcome == "no_rule" and not agrees(live, shadow)


def test_capped_endpoints_stay_in_until_the_live_book_holds_them_full():
    raw = deep_merge(
        LIVE, {"endpoints": {"out3": {"warmup": {"start": NOW.date().isoformat(), "schedule": [10]}}}}
    )
    config = validate_config(raw)
    clock = FixedClock(NOW)
    planner = Planner(config, random.Random(1), clock)
    book = QuotaBook(KeySchema(), clock)
    draw = planner.prepare(facts(1), NOW)
    assert not isinstance(draw, Decision)
    day, hour = draw.buckets
    seen = ShadowEligibility(draw, None, book, clock.monotonic())
    assert seen.why_not("out3", False) is None  # nothing known: the candidate may use it
    assert book.take_work() == ([], [], {})  # and asked nothing
    with pytest.raises(NeedRedis):  # the live deciders' own look asks Redis for a lease
        book.check("out3", 1, day, hour, 10, None)
    (refill,), _, _ = book.take_work()
    book.granted(refill, 0)  # Redis: the cap is reached
    assert ShadowEligibility(draw, None, book, clock.monotonic()).why_not("out3", False) == CAP_HELD
    assert book.take_work() == ([], [], {})
    clock.advance(3600)  # the hold has long run out: the live deciders would ask again
    assert ShadowEligibility(draw, None, book, clock.monotonic()).why_not("out3", False) is None
