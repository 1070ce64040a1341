"""Experiment arms: a stable, independent assignment, and the arm's pool on every path."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from integration.configs import even_experiment
from integration.fixtures import arm_record_of
from integration.statistics import assert_shares
from smtp_balancer.clock import FixedClock
from smtp_balancer.config import validate_config
from smtp_balancer.config.loader import ConfigInvalid
from smtp_balancer.decision.draw import Draw
from smtp_balancer.decision.experiments import Experiment
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.planner import Planner
from smtp_balancer.engine import Engine
from smtp_balancer.state.arm_book import arm_day
from smtp_balancer.state.keys import KeySchema
from tests.ready import started

NOW = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
KEYS = KeySchema()

EXPERIMENT = {
    "pools": {
        "main": {"endpoints": [{"endpoint": "out1", "weight": 1}, {"endpoint": "out2", "weight": 1}]},
        "solo3": {"endpoints": [{"endpoint": "out3", "weight": 1}]},
    },
    "experiments": [
        {
            "name": "ab",
            "rule": "all",
            "arms": [
                {"name": "control", "pool": "main", "split": 70},
                {"name": "only3", "pool": "solo3", "split": 30},
            ],
        }
    ],
}


def _experiment(config) -> Experiment:
    return Experiment.of(config.experiments[0], {})


def test_assignment_is_stable_and_splits_by_its_shares(make_config):
    exp = _experiment(make_config(EXPERIMENT))
    facts = [
        Facts(sender="a@shop.test", recipients=(f"u{i}@x.test",), queue_id=f"Q{i:06X}") for i in range(10_000)
    ]
    first = [exp.assign(f).name for f in facts]
    assert first == [exp.assign(f).name for f in facts]  # the same key, the same arm
    assert_shares(Counter(first), {"control": 0.7, "only3": 0.3}, "arms")
    by_domain = Experiment.of(
        make_config(EXPERIMENT).experiments[0].model_copy(update={"by": "recipient_domain"}), {}
    )
    same_domain = {
        by_domain.assign(Facts(recipients=(f"u{i}@one.test",), queue_id=str(i))).name for i in range(50)
    }
    assert len(same_domain) == 1  # every message to a domain keeps one arm


def test_config_errors_name_the_cause(make_config):
    bad = {
        "experiments": [
            {
                "name": "x",
                "rule": "nope",
                "arms": [
                    {"name": "a", "pool": "main", "split": 60},
                    {"name": "b", "pool": "gone", "split": 40},
                ],
            },
            {
                "name": "y",
                "rule": "all",
                "arms": [
                    {"name": "a", "pool": "main", "split": 60},
                    {"name": "b", "pool": "main", "split": 30},
                ],
            },
        ]
    }
    with pytest.raises(ConfigInvalid) as info:
        make_config(bad)
    text = str(info.value)
    assert "experiments[0].rule: unknown rule 'nope'" in text
    assert "experiments[0].arms[1].pool: unknown pool 'gone'" in text
    assert "add up to 90, not 100" in text


def test_config_errors_of_rule_orders_and_matches_name_the_cause(make_config):
    def arms(*extra: dict) -> list[dict]:
        return [{"name": "a", "pool": "main", "split": 50}, {"name": "b", "split": 50, **extra[0]}]

    bad = {
        "experiments": [
            {"name": "both", "rule": "all", "match": {"sender": ["a@x.t"]}, "arms": arms({"pool": "main"})},
            {"name": "neither", "arms": arms({"pool": "main"})},
            {"name": "arm2", "rule": "all", "arms": arms({"pool": "main", "rule_order": ["all"]})},
            {"name": "arm0", "rule": "all", "arms": arms({})},
            {"name": "order", "match": {"provider": ["nope"]}, "arms": arms({"rule_order": ["all", "gone"]})},
        ]
    }
    with pytest.raises(ConfigInvalid) as info:
        make_config(bad)
    text = str(info.value)
    assert text.count("an experiment names either a rule or a match") == 2
    assert text.count("an arm names either a pool or a rule_order") == 2
    assert "experiments[4].arms[1].rule_order[1]: unknown rule 'gone'" in text
    assert "experiments[4].match.provider[0]: unknown provider 'nope'" in text


ORDERS = {
    "pools": EXPERIMENT["pools"],
    "rules": [
        {"name": "news", "sender_domain": ["news.test"], "pool": "main"},
        {"name": "gmail", "provider": ["google"], "pool": "solo3"},
        {"name": "all", "pool": "main"},
    ],
}


def _planner(config, running: set[str]) -> Planner:
    planner = Planner(config, clock=FixedClock(NOW))
    planner.running = lambda: running
    return planner


def _route(planner: Planner, sender: str, rcpt: str, qid: str) -> tuple[str, str, tuple[str, str] | None]:
    draw = planner.prepare(Facts(sender=sender, recipients=(rcpt,), queue_id=qid))
    assert isinstance(draw, Draw)
    return draw.rule.name, draw.plan.stages[0].pool, draw.arm


def test_a_rule_order_arm_routes_by_the_first_of_its_rules_that_matches(make_config):
    arms = [
        {"name": "as-is", "rule_order": ["news"], "split": 50},
        {"name": "gmail-first", "rule_order": ["gmail", "news"], "split": 50},
    ]
    config = make_config({**ORDERS, "experiments": [{"name": "order", "rule": "news", "arms": arms}]})
    planner = _planner(config, {"order"})
    seen = Counter(_route(planner, "a@news.test", "u@gmail.com", f"Q{i}") for i in range(400))
    assert set(seen) == {
        ("news", "main", ("order", "as-is")),
        ("gmail", "solo3", ("order", "gmail-first")),  # the other order: the gmail rule wins
    }
    # no rule of the order matches: the message's own rule routes it, still in its arm
    yahoo = {_route(planner, "a@news.test", "u@yahoo.com", f"Q{i}") for i in range(400)}
    assert yahoo == {("news", "main", ("order", "as-is")), ("news", "main", ("order", "gmail-first"))}
    # other rules' messages are not in the experiment; stopped, nothing is
    assert _route(planner, "a@shop.test", "u@gmail.com", "Q1") == ("gmail", "solo3", None)
    assert {_route(_planner(config, set()), "a@news.test", "u@gmail.com", f"Q{i}") for i in range(50)} == {
        ("news", "main", None)
    }


def test_a_match_experiment_splits_the_messages_it_selects_whatever_their_rule(make_config):
    by_match = {
        "name": "m",
        "match": {"sender_domain": ["news.test", "promo.test"]},
        "arms": [
            {"name": "main", "pool": "main", "split": 50},
            {"name": "three", "pool": "solo3", "split": 50},
        ],
    }
    by_rule = even_experiment("r", "news", {"r-main": "main", "r-three": "solo3"})
    config = make_config({**ORDERS, "experiments": [by_match, by_rule]})
    planner = _planner(config, {"m", "r"})
    promo = Counter(_route(planner, "a@promo.test", "u@gmail.com", f"Q{i}")[2] for i in range(400))
    assert set(promo) == {("m", "main"), ("m", "three")}
    # a rule's own experiment comes first; mail the match does not select stays out
    assert {_route(planner, "a@news.test", "u@x.test", f"Q{i}")[2][0] for i in range(50)} == {"r"}
    assert _route(planner, "a@shop.test", "u@x.test", "Q1") == ("all", "main", None)
    # with the rule's experiment stopped, the match takes its messages
    only_m = _planner(config, {"m"})
    assert {_route(only_m, "a@news.test", "u@x.test", f"Q{i}")[2][0] for i in range(50)} == {"m"}


@pytest.mark.parametrize("local", [True, False])
async def test_a_running_experiment_routes_each_arm_through_its_pool_and_records_it(make_config, rdb, local):
    engine = Engine(make_config({"decision": {"local": local}, **EXPERIMENT}), FixedClock(NOW))
    engine.planner.rng = random.Random("arms")
    try:
        await started(engine)
        before = await engine.decide(Facts(recipients=("a@x.test",), queue_id="Q0"))
        rdb.hset(KEYS.experiment("ab"), mapping={"state": "running", "started": "1"})
        await engine.settle()  # tracked: at once
        if not local:
            await engine.mirror.load()  # untracked: within decision.state_refresh_s
        seen: Counter[tuple[str | None, str | None]] = Counter()
        for i in range(2_000):
            d = await engine.decide(Facts(recipients=(f"u{i}@x.test",), queue_id=f"Q{i + 1:05X}"))
            seen[(d.arm, d.endpoint)] += 1
        await engine.leases.round()  # write the records and counts now
    finally:
        await engine.aclose()
    assert before.arm is None  # not started: the rule's own pool
    assert set(seen) <= {("control", "out1"), ("control", "out2"), ("only3", "out3")}
    only3 = seen[("only3", "out3")]
    assert_shares(Counter({"control": 2_000 - only3, "only3": only3}), {"control": 0.7, "only3": 0.3}, "arms")
    # the arm, and when it was decided (by the engine's clock): a later run's start skips it
    wall = int(NOW.timestamp())
    assert arm_record_of(rdb, "Q00001", wall) in (f"ab control {wall}", f"ab only3 {wall}")
    assert int(rdb.hget(KEYS.expstats("ab", "only3"), "decided")) == only3
    kept = (arm_day(wall) + 1) * 86_400 - wall + 5 * 86_400  # the day's rest, and 5 days
    assert kept - 10 <= rdb.ttl(KEYS.arm_dir(arm_day(wall))) <= kept


def test_validates_standalone():
    raw = {
        "endpoints": {"a": {}},
        "pools": {"p": {"endpoints": [{"endpoint": "a"}]}},
        "rules": [{"name": "r", "pool": "p"}],
    }
    raw["experiments"] = [even_experiment("e", "r", {"x": "p", "y": "p"})]
    assert validate_config(raw).experiments[0].arms[1].split == 50
