"""The sans-I/O planner: script arguments, plans and the local (degraded) choice."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime

from smtp_balancer.config import validate_config
from smtp_balancer.decision.draw import Draw
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.script import ScriptCodec

NOW = datetime(2026, 11, 24, 10, tzinfo=UTC)
RAW = {
    "endpoints": {
        "a": {},
        "b": {
            "warmup": {"start": "2026-11-24", "schedule": [5], "providers": {"google": [{"daily": 2}]}},
            "rate_caps": {"yahoo": 60},
        },
        "r": {"kind": "relay", "nexthop": "mx2.test:2525"},
    },
    "pools": {
        "p": {
            "endpoints": [{"endpoint": "a", "weight": 3}, {"endpoint": "b", "weight": 1}],
            "overflow": "pool:q",
        },
        "q": {"endpoints": [{"endpoint": "r"}], "overflow": "ignore_caps"},
    },
    "rules": [{"name": "all", "pool": "p"}],
}


def test_plan_flattens_overflow_chain():
    plan = Planner(validate_config(RAW)).plans["p"]
    assert [(s.pool, s.ignore_caps) for s in plan.stages] == [("p", False), ("q", False), ("q", True)]
    assert plan.terminal == "default"


def test_relay_route_nexthop_is_bracketed():
    assert Planner(validate_config(RAW)).routes["r"].filter_target == "r:[mx2.test]:2525"


def test_script_arguments_layout():
    planner = Planner(validate_config(RAW), random.Random(1))
    call = planner.prepare(
        Facts(sender="a@shop.test", recipients=("x@gmail.com", "y@gmail.com", "z@yahoo.com")), NOW
    )
    assert isinstance(call, Draw)
    keys, args = ScriptCodec(planner).encode(call)
    assert keys == [b"{sb}:pool:p:weights"]
    header, plan, providers, hashes = args
    assert header == f"{{sb}}: 1 0 {call.r!r} 3 20261124 2026112410 {call.wall!r} 0.0"
    assert json.loads(plan) == [
        # b's gmail cap (day 2, no hour cap) and its yahoo rate cap
        ["p", 1, 0, ["a", "b"], [3, 1], [-1, 5], [-1, -1], [{}, {"google": [2, -1]}], [{}, {"yahoo": 60}], 0],
        ["q", 1, 0, ["r"], [1], [], [], [], [], 0],  # no member capped: no cap lists
        ["q", 1, 1, ["r"], [1], [], [], [], [], 0],
    ]
    assert providers == "google 2,yahoo 1"
    assert hashes == "//"  # no stage is sticky


def test_local_decision_skips_warming_and_never_defers():
    planner = Planner(validate_config(RAW), random.Random(3))
    call = planner.prepare(Facts(recipients=("x@y.test",)), NOW)
    assert isinstance(call, Draw)
    picks = Counter(planner.degraded(call, "test", None).endpoint for _ in range(100))
    assert picks == Counter({"a": 100})


def test_inbound_recipients_are_never_routed():
    planner = Planner(validate_config({**RAW, "inbound_domains": ["inbound.test", ".corp.test"]}))
    for rcpts in (["u@inbound.test"], ["u@mx.corp.test"], ["a@gmail.com", "b@inbound.test"]):
        decision = planner.prepare(Facts(recipients=tuple(rcpts)), NOW)
        # Postfix's FILTER is for every recipient: one inbound recipient means no route
        assert isinstance(decision, Decision) and decision.outcome == "inbound", rcpts
    assert "is received here (inbound_domains)" in decision.reason
    # ".corp.test" is the subdomains only; a look-alike domain is not inbound
    for rcpts in (["u@corp.test"], ["u@xinbound.test"], ["u@inbound.test.evil.example"]):
        assert isinstance(planner.prepare(Facts(recipients=tuple(rcpts)), NOW), Draw), rcpts


def test_per_recipient_routing_routes_the_remote_recipients_only():
    planner = Planner(validate_config({**RAW, "inbound_domains": ["inbound.test"]}))
    facts = Facts(
        recipients=("a@gmail.com", "b@inbound.test", "c@yahoo.com"), recipient_count=3, per_recipient=True
    )
    draw = planner.prepare(facts, NOW)
    assert isinstance(draw, Draw)
    assert draw.facts.recipients == ("a@gmail.com", "c@yahoo.com")
    assert draw.facts.quota_count == 2  # the inbound recipient costs no warm-up quota
    assert set(draw.providers) == {"google", "yahoo"}
    alone = planner.prepare(Facts(recipients=("b@inbound.test",), per_recipient=True), NOW)
    assert isinstance(alone, Decision) and alone.outcome == "inbound"


def test_a_moved_tenants_mail_goes_to_its_pool_and_an_unknown_pool_is_ignored():
    planner = Planner(validate_config({**RAW, "tenants": ["shop.test"]}), random.Random(1))
    facts = Facts(sender="a@news.shop.test", recipients=("x@gmail.com",))
    assert planner.prepare(facts, NOW).plan.stages[0].pool == "p"
    planner.tenant_pools = lambda: {"shop.test": "q"}
    draw = planner.prepare(facts, NOW)
    assert draw.plan.stages[0].pool == "q" and draw.rule.name == "all"
    other = planner.prepare(Facts(sender="a@other.test", recipients=("x@gmail.com",)), NOW)
    assert other.plan.stages[0].pool == "p"  # only the moved tenant's mail
    planner.tenant_pools = lambda: {"shop.test": "gone"}  # a pool a reload removed
    assert planner.prepare(facts, NOW).plan.stages[0].pool == "p"
