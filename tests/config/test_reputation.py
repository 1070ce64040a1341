"""The reputation section: rules checked against the signals each source has."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smtp_balancer.config.reputation import ReputationConfig, ReputationRuleConfig


def test_the_shipped_rules_follow_the_operators_and_can_be_turned_off():
    own = ReputationRuleConfig(name="mine", source="snds", signal="trap_hits", above=10)
    assert [r.name for r in ReputationConfig(rules=[own]).active_rules] == [
        "mine", "google-ip-bad", "google-ip-low", "snds-red", "snds-blocked",
        "google-spam-rate-hold", "google-spam-rate-warning",
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
        (
            {"source": "postmaster", "signal": "spam_ratio", "above": 0.3},
            "about a sending domain: its action is warn, hold_tenant or move_tenant",
        ),
        (
            {"source": "postmaster", "signal": "ip_reputation", "values": ["BAD"], "action": "hold_tenant"},
            "about an IP: warn and the tenant actions are for",
        ),
        (
            {"source": "postmaster", "signal": "honor_unsubscribe", "above": 1, "action": "warn"},
            "is a status: give values",
        ),
        (
            {"source": "snds", "signal": "spam_ratio", "above": 1, "action": "warn"},
            "snds has no signal spam_ratio",
        ),
    ],
)
def test_a_rule_that_cannot_match_is_refused_with_a_reason(rule: dict, says: str):
    with pytest.raises(ValidationError, match=says):
        ReputationRuleConfig(name="r", **rule)


def test_rule_names_are_unique():
    rule = {"name": "r", "source": "snds", "signal": "blocked", "values": ["yes"]}
    with pytest.raises(ValidationError, match="unique: r"):
        ReputationConfig(rules=[rule, rule])
