"""The reputation section: rules checked against the signals each source has."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smtp_balancer.config.reputation import ReputationConfig, ReputationRuleConfig


def test_the_shipped_rules_follow_the_operators_and_can_be_turned_off():
    own = ReputationRuleConfig(name="mine", source="snds", signal="trap_hits", above=10)
    assert [r.name for r in ReputationConfig(rules=[own]).active_rules] == [
        "mine", "google-ip-bad", "google-ip-low", "snds-red", "snds-blocked",
    ]  # fmt: skip
    assert ReputationConfig(rules=[own], builtin_rules=False).active_rules == [own]
    assert own.for_provider == "microsoft"
    assert (
        ReputationRuleConfig(
            name="g", source="postmaster", signal="ip_reputation", values=["BAD"], provider="gmail2"
        ).for_provider
        == "gmail2"
    )


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        (
            {"source": "postmaster", "signal": "filter_result", "values": ["RED"]},
            "postmaster has no signal filter_result",
        ),
        ({"source": "postmaster", "signal": "ip_reputation", "values": ["GOOD"]}, "not GOOD"),
        ({"source": "postmaster", "signal": "ip_reputation", "above": 1}, "is a category: give values"),
        ({"source": "snds", "signal": "complaint_rate", "values": ["1"]}, "is a number: give above"),
    ],
)
def test_a_rule_that_cannot_match_is_refused_with_a_reason(rule: dict, says: str):
    with pytest.raises(ValidationError, match=says):
        ReputationRuleConfig(name="r", **rule)


def test_rule_names_are_unique():
    rule = {"name": "r", "source": "snds", "signal": "blocked", "values": ["yes"]}
    with pytest.raises(ValidationError, match="unique: r"):
        ReputationConfig(rules=[rule, rule])
