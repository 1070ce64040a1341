"""The reply model: a message's own replies on its own route, else one drawn from
the route's replies around its time, else the provider's elsewhere (unobserved)."""

from __future__ import annotations

from collections import Counter

from integration.statistics import assert_shares
from smtp_balancer.replay.inputs import Attempt
from smtp_balancer.replay.replies import ReplyModel
from tests.replay.scenario import T0, delivery


def attempts() -> list[Attempt]:
    out2 = [Attempt(T0 + i, delivery(f"Q{i}", "out2", "gmail.com", refused=i % 4 == 0)) for i in range(400)]
    late = [Attempt(T0 + 5000 + i, delivery(f"L{i}", "out2", "gmail.com", refused=True)) for i in range(10)]
    return out2 + late


def test_a_message_on_its_own_route_gets_its_own_replies():
    model = ReplyModel(attempts())
    assert [a.delivery.queue_id for a in model.own("Q4", "out2")] == ["Q4"]
    assert model.own("Q4", "out1") == [] and model.own("", "out2") == []


def test_drawn_replies_are_the_routes_latest_in_their_proportions():
    model = ReplyModel(attempts(), latest=20, seed=7)
    drawn = [model.drawn("out2", "google", T0 + 200)[0] for _ in range(4000)]
    assert all(a is not None and T0 + 181 <= a.at <= T0 + 200 for a in drawn)
    statuses = Counter(a.delivery.status for a in drawn if a is not None)
    # 5 of the 20 replies up to T0+200 are refusals: a quarter (chi-square)
    assert_shares(statuses, {"deferred": 1, "sent": 3})


def test_a_reply_never_comes_from_after_the_message():
    """A CI run: replies drawn from 5 minutes either side felt a Gmail throttle before
    the log showed it, and the replay suspended out2 two seconds early."""
    model = ReplyModel(attempts(), latest=20)
    assert all(model.drawn("out2", "google", T0 + 4999)[0].at <= T0 + 4999 for _ in range(200))  # type: ignore[union-attr]
    attempt, observed = model.drawn("out2", "google", T0 - 10)  # before any: the first one
    assert observed and attempt is not None and attempt.at == T0


def test_a_route_never_seen_borrows_the_provider_and_says_so():
    model = ReplyModel(attempts())
    attempt, observed = model.drawn("out9", "google", T0 + 10)
    assert attempt is not None and attempt.delivery.endpoint == "out2" and not observed
    assert model.drawn("out9", "yahoo", T0) == (None, False)


def test_again_shares_the_replies_and_draws_on_its_own():
    model = ReplyModel(attempts(), seed=7)
    other = model.again(7)
    assert other.routes is model.routes and other.by_queue_id is model.by_queue_id
    first = [model.drawn("out2", "google", T0 + 200)[0] for _ in range(50)]
    assert [other.drawn("out2", "google", T0 + 200)[0] for _ in range(50)] == first
