"""The Feedback-ID value: the fields from the decision, tenant and class; no colon inside one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smtp_balancer.config.services import FeedbackIdConfig
from smtp_balancer.decision.facts import Decision
from smtp_balancer.decision.feedback_id import feedback_id

ROUTED = Decision(outcome="route", reason="x", endpoint="out2", pool="bulk", rule="newsletters")


def test_the_default_format_is_rule_tenant_class_sender_id():
    cfg = FeedbackIdConfig(enabled=True, sender_id="esp1")
    assert (
        feedback_id(cfg.format, cfg.sender_id, ROUTED, "bulk", "shop.test")
        == "newsletters:shop.test:bulk:esp1"
    )


def test_every_field_and_what_a_field_may_not_hold():
    fmt = "{pool}:{endpoint}:{tenant}:{class}:{rule}:{sender_id}"
    unrouted = Decision(outcome="default", reason="no eligible endpoint")
    assert (
        feedback_id(fmt, "esp1", unrouted, "transactional", "other")
        == "none:default:other:transactional:none:esp1"
    )
    assert feedback_id("{tenant}:{sender_id}", "esp1", ROUTED, "bulk", "a:b c") == "a-b-c:esp1"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"format": "{campaign}:{sender_id}", "sender_id": "x"}, "not campaign"),
        ({"format": "{rule} {sender_id}", "sender_id": "x"}, "only fields, colons"),
        ({"enabled": True}, "sender_id is empty"),
        ({"sender_id": "a:b"}, "sender_id"),
    ],
)
def test_a_format_or_sender_id_that_cannot_be_stamped_is_refused(fields: dict, says: str):
    with pytest.raises(ValidationError, match=says):
        FeedbackIdConfig(**fields)
