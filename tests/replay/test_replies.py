"""The reply model: a message's own replies on its own route, else one drawn from
the route's latest replies up to its time, else the provider's (unobserved); only
a bounded part of the log is held."""

from __future__ import annotations

import random
from collections import Counter

from integration.statistics import assert_shares
from smtp_balancer.replay.inputs import Attempt
from smtp_balancer.replay.replies import BACK_S, ReplyModel
from tests.replay.scenario import T0, delivery


def attempts() -> list[Attempt]:
    out2 = [Attempt(T0 + i, delivery(f"Q{i}", "out2", "gmail.com", refused=i % 4 == 0)) for i in range(400)]
    late = [Attempt(T0 + 5000 + i, delivery(f"L{i}", "out2", "gmail.com", refused=True)) for i in range(10)]
    return out2 + late


def test_a_message_on_its_own_route_gets_its_own_replies():
    model = ReplyModel.of(attempts())
    assert [a.delivery.queue_id for a in model.own("Q4", "out2")] == ["Q4"]
    assert model.own("Q4", "out1") == [] and model.own("", "out2") == []


def test_drawn_replies_are_the_routes_latest_in_their_proportions():
    model = ReplyModel.of(attempts(), latest=20)
    model.reach(T0 + 200)
    rng = random.Random(7)
    drawn = [model.drawn("out2", "google", rng)[0] for _ in range(4000)]
    assert all(a is not None and T0 + 181 <= a.at <= T0 + 200 for a in drawn)
    statuses = Counter(a.delivery.status for a in drawn if a is not None)
    # 5 of the 20 replies up to T0+200 are refusals: a quarter (chi-square)
    assert_shares(statuses, {"deferred": 1, "sent": 3})


def test_a_reply_never_comes_from_after_the_message():
    """A CI run: replies drawn from 5 minutes either side felt a Gmail throttle before
    the log showed it, and the replay suspended out2 two seconds early."""
    model = ReplyModel.of(attempts(), latest=20)
    assert model.drawn("out2", "google", random.Random(1)) == (None, False)  # before any reply
    model.reach(T0 + 4999)
    rng = random.Random(1)
    assert all(model.drawn("out2", "google", rng)[0].at <= T0 + 4999 for _ in range(200))  # type: ignore[union-attr]


def test_a_route_with_no_reply_yet_borrows_the_providers():
    model = ReplyModel.of(attempts())
    model.reach(T0 + 10)
    attempt, observed = model.drawn("out9", "google", random.Random(1))
    assert attempt is not None and attempt.delivery.endpoint == "out2" and not observed
    assert model.drawn("out9", "yahoo", random.Random(1)) == (None, False)
    assert ("out2", "google") in model.seen_routes and ("out9", "google") not in model.seen_routes


def test_only_a_bounded_part_of_the_log_is_held():
    model = ReplyModel(latest=20)
    for k in range(100_000):
        model.read(Attempt(T0 + k * 0.01, delivery(f"Q{k}", "out2", "gmail.com", refused=False)))
        model.reach(T0 + k * 0.01 - 60)  # read a minute ahead
    held_by_id = len(model.by_queue_id)
    assert 6_000 <= held_by_id <= (60 + BACK_S) * 100 + 1  # the minute ahead and BACK_S behind
    assert len(model.routes[("out2", "google")]) == 20 and len(model.providers["google"]) == 20


def test_each_reply_read_is_told_to_the_listeners():
    model = ReplyModel()
    heard: list[str] = []
    model.listeners.append(lambda a: heard.append(a.delivery.queue_id))
    for a in attempts()[:3]:
        model.read(a)
    assert heard == ["Q0", "Q1", "Q2"]
