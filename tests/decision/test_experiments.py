"""Experiment arms: a stable, independent assignment, and the arm's pool on every path."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from integration.configs import even_experiment
from integration.statistics import assert_shares
from smtp_balancer.clock import FixedClock
from smtp_balancer.config import validate_config
from smtp_balancer.config.loader import ConfigInvalid
from smtp_balancer.decision.experiments import Experiment
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.state.keys import KeySchema

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
    return Experiment.of(config.experiments[0])


def test_assignment_is_stable_and_splits_by_its_shares(make_config):
    exp = _experiment(make_config(EXPERIMENT))
    facts = [
        Facts(sender="a@shop.test", recipients=(f"u{i}@x.test",), queue_id=f"Q{i:06X}") for i in range(10_000)
    ]
    first = [exp.assign(f)[0] for f in facts]
    assert first == [exp.assign(f)[0] for f in facts]  # the same key, the same arm
    assert_shares(Counter(first), {"control": 0.7, "only3": 0.3}, "arms")
    by_domain = Experiment.of(
        make_config(EXPERIMENT).experiments[0].model_copy(update={"by": "recipient_domain"})
    )
    same_domain = {
        by_domain.assign(Facts(recipients=(f"u{i}@one.test",), queue_id=str(i)))[0] for i in range(50)
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


@pytest.mark.parametrize("local", [True, False])
async def test_a_running_experiment_routes_each_arm_through_its_pool_and_records_it(make_config, rdb, local):
    engine = Engine(make_config({"decision": {"local": local}, **EXPERIMENT}), FixedClock(NOW))
    engine.planner.rng = random.Random("arms")
    try:
        assert await engine.start()
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
    assert rdb.get(KEYS.arm_record("Q00001")) in ("ab control", "ab only3")
    assert int(rdb.hget(KEYS.expstats("ab", "only3"), "decided")) == only3
    assert 5 * 86_400 - 10 <= rdb.ttl(KEYS.arm_record("Q00001")) <= 5 * 86_400


def test_validates_standalone():
    raw = {
        "endpoints": {"a": {}},
        "pools": {"p": {"endpoints": [{"endpoint": "a"}]}},
        "rules": [{"name": "r", "pool": "p"}],
    }
    raw["experiments"] = [even_experiment("e", "r", {"x": "p", "y": "p"})]
    assert validate_config(raw).experiments[0].arms[1].split == 50
