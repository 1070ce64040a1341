from __future__ import annotations

import pytest

from smtp_balancer.config.model import RuleConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.decision.rules import RuleSet


def rules(*specs: dict) -> RuleSet:
    return RuleSet([RuleConfig.model_validate({"pool": "p", **s}) for s in specs])


@pytest.mark.parametrize(
    ("spec", "facts", "expected"),
    [
        ({"sender": ["noreply@*"]}, Facts(sender="NoReply@shop.test"), True),
        ({"sender": ["noreply@*"]}, Facts(sender="sales@shop.test"), False),
        ({"sender_domain": ["*.shop.test"]}, Facts(sender="a@eu.shop.test"), True),
        ({"sasl_username": ["app1"]}, Facts(sasl_username="app1"), True),
        ({"sasl_username": ["app1"]}, Facts(sasl_username=""), False),
        ({"client": ["10.0.0.0/8"]}, Facts(client_address="10.1.2.3"), True),
        ({"client": ["10.0.0.0/8"]}, Facts(client_address="unknown"), False),
        ({"client": ["2001:db8::/32"]}, Facts(client_address="10.1.2.3"), False),
        ({"recipient_domain": ["*.edu"]}, Facts(recipients=("a@x.com", "b@mit.edu")), True),
        ({"message_class": ["bulk"]}, Facts(message_class="Bulk"), True),
        ({"message_class": ["bulk"]}, Facts(), False),
        ({"size": {"min": 100, "max": 200}}, Facts(size=150), True),
        ({"size": {"min": 100}}, Facts(size=99), False),
        ({"size": {"max": 10}}, Facts(), False),
        ({"sender": ["*@a.test"], "message_class": ["bulk"]}, Facts(sender="x@a.test"), False),
    ],
)
def test_conditions(spec: dict, facts: Facts, expected: bool):
    assert (rules({"name": "r", **spec}).match(facts, []) is not None) is expected


def test_first_match_wins_and_provider_condition():
    rs = rules({"name": "google", "provider": ["google"]}, {"name": "rest"})
    assert rs.match(Facts(), ["google", "other"]).name == "google"
    assert rs.match(Facts(), ["yahoo"]).name == "rest"
