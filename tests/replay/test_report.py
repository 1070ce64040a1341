"""Replay's report: routes, caps, actions both ways, unmatched rules, deferral intervals."""

from __future__ import annotations

from collections import Counter

import pytest

from smtp_balancer.decision.planner import Planner
from smtp_balancer.replay.replies import ReplyModel
from smtp_balancer.replay.report import as_dict, render, wilson
from smtp_balancer.replay.simulate import Simulator, actual_volumes
from tests.replay.scenario import config, logged


def test_wilson_interval():
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(10, 100)
    assert low == pytest.approx(0.0552, abs=1e-4) and high == pytest.approx(0.1744, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_the_report_sets_the_candidate_beside_the_log_and_the_live_replay():
    messages, attempts = logged()
    live = Simulator(config(), ReplyModel.of(attempts), "live_replayed").replay(messages)
    pools = {"main": {"endpoints": [{"endpoint": "out1", "weight": 3}, {"endpoint": "out3", "weight": 1}]}}
    candidate = Simulator(config({"pools": pools}), ReplyModel.of(attempts), "candidate")
    run = candidate.replay(messages)
    actual = actual_volumes(messages, Planner(config()))
    report = as_dict(actual, live, run, [r.name for r in candidate.response_rules], Counter({"x": 2}))
    routes = {(r["endpoint"], r["provider"]): r for r in report["routes"]}
    assert all(r["actual"] == r["live_replayed"] for r in routes.values())
    assert sum(r["candidate"] for r in routes.values() if r["endpoint"] == "out2") == 0
    (suspension,) = report["actions"]["live_replayed"]
    assert suspension["rule"] == "google-rate-limited" and suspension["in_the_other"] is False
    assert report["actions"]["candidate"] == []
    assert "google-rate-limited" in report["response_rules_never_matched"]
    assert {d["endpoint"] for d in report["deferral"]} == {"out1", "out3"}
    assert report["lines_not_used"] == {"x": 2}
    text = render(report)
    assert "live_replayed: rule google-rate-limited suspend_provider (out2, google)" in text
    assert "(only here)" in text and "2 lines not used: x" in text
