"""Replay's simulator: the real decision model in simulated time, caps counted
exactly, the real response rules acting on the modelled replies."""

from __future__ import annotations

from collections import Counter

from smtp_balancer.decision.planner import Planner
from smtp_balancer.replay.inputs import Attempt
from smtp_balancer.replay.replies import ReplyModel
from smtp_balancer.replay.simulate import Simulator, actual_volumes
from tests.replay.scenario import T0, THROTTLED_FROM, config, delivery, logged


def endpoints(run) -> Counter[str]:
    out: Counter[str] = Counter()
    for (endpoint, _, _), n in run.volumes.items():
        out[endpoint] += n
    return out


def test_the_live_config_replayed_gets_the_log_back():
    messages, attempts = logged()
    actual = actual_volumes(messages, Planner(config()))
    run = Simulator(config(), ReplyModel.of(attempts), "live").replay(messages)
    assert run.volumes == actual.volumes and run.outcomes == actual.outcomes
    # out3's caps, reached where the log reached them
    assert endpoints(run)["out3"] == 20
    assert sum(n for (e, p, _), n in run.volumes.items() if e == "out3" and p == "google") == 3
    assert {(c.endpoint, c.scope) for c in run.caps.values()} == {("out3", "google"), ("out3", "total")}
    # Gmail's first 421 on out2 suspends (out2, google) at that reply's time, as the log did
    (fired,) = run.fired
    first_421 = min(
        a.at for a in attempts if a.delivery.status == "deferred" and a.delivery.endpoint == "out2"
    )
    assert (fired.rule, fired.endpoint, fired.provider, fired.at, fired.seconds) == (
        "google-rate-limited",
        "out2",
        "google",
        first_421,
        900,
    )
    assert first_421 > T0 + THROTTLED_FROM


def test_new_weights_give_their_own_shares_and_no_suspension():
    messages, attempts = logged()
    pools = {"main": {"endpoints": [{"endpoint": "out1", "weight": 3}, {"endpoint": "out3", "weight": 1}]}}
    run = Simulator(config({"pools": pools}), ReplyModel.of(attempts), "candidate").replay(messages)
    assert run.fired == []  # no Gmail mail on out2, so no 421 to act on
    assert endpoints(run) == {"out1": 280, "out3": 20}  # out3 to its cap, the rest to out1


def test_a_lower_cap_is_reached_at_the_message_the_model_names():
    messages, attempts = logged()
    lower = {"endpoints": {"out3": {"warmup": {"schedule": [8], "providers": {"google": [2]}}}}}
    run = Simulator(config(lower), ReplyModel.of(attempts), "candidate").replay(messages)
    assert endpoints(run)["out3"] == 8
    cap = next(c for c in run.caps.values() if c.endpoint == "out3" and c.scope == "total")
    # the message that found it reached is the first one drawn to out3 after its 8th
    assert cap.message > 8 and cap.at == T0 + cap.message - 1


def test_a_new_response_rule_fires_at_the_reply_that_triggers_it():
    messages, attempts = logged()
    rule = {
        "name": "third-421-throttles",
        "match": r"4\.7\.28",
        "providers": ["google"],
        "statuses": ["deferred"],
        "trigger": {"count": 3, "period": 600},
        "action": "throttle",
        "factor": 0.25,
        "duration": 60,
    }
    candidate = config({"feedback": {"response_rules": [rule], "builtin_rules": False}})
    # Gmail went on refusing out2 (the log shows it, on mail that was not ours to replay)
    refusing = [
        Attempt(T0 + THROTTLED_FROM + k, delivery(f"X{k}", "out2", "gmail.com", True)) for k in range(200)
    ]
    run = Simulator(candidate, ReplyModel.of(attempts + refusing, latest=1), "candidate").replay(messages)
    first = run.fired[0]
    assert (first.rule, first.action, first.factor) == ("third-421-throttles", "throttle", 0.25)
    assert first.at == run.first_matched["third-421-throttles"][2]  # at its third match
    assert run.matched["third-421-throttles"] >= 3


def test_an_unobserved_route_borrows_the_providers_replies():
    messages, attempts = logged()
    only_out2 = [a for a in attempts if a.delivery.endpoint != "out1"]  # out1 never seen in the log
    run = Simulator(config(), ReplyModel.of(only_out2), "candidate").replay(messages)
    assert ("out1", "google") in run.unobserved and ("out2", "google") not in run.unobserved
    # out1's google mail got Google's replies on out2 and out3 around its time: 421s too
    assert run.replies[("out1", "google", "deferred")] > 0


def test_another_hosts_endpoints_are_left_out_as_its_daemons_leave_them():
    messages, attempts = logged()
    fleet = config({"endpoints": {"out3": {"host": "mta2"}}})
    run = Simulator(fleet, ReplyModel.of(attempts), "candidate", foreign=["out3"]).replay(messages)
    assert set(endpoints(run)) == {"out1", "out2"}
