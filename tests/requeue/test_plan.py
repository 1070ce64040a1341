"""Which deferred messages move, and why (sans-I/O)."""

from __future__ import annotations

from smtp_balancer.config.feedback import FeedbackConfig, RateRuleConfig, ResponseRuleConfig
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.responses import builtin_rules
from smtp_balancer.requeue.plan import (
    AutomaticRules,
    EndpointState,
    bound_counts,
    endpoint_state,
    move_reason,
    plan_moves,
)
from smtp_balancer.requeue.queuefile import QueuedMessage

RULES = AutomaticRules(frozenset({"google-rate-limited"}), frozenset({"deferral-rate"}), True)
TARGETS = {"out1": "out1:", "out2": "out2:", "relay1": "relay1:[10.0.0.9]:25"}
PROVIDERS = ProviderTable.build()


def msg(qid: str, route: str, *rcpts: str, arrival: float = 1.0) -> QueuedMessage:
    return QueuedMessage(qid, arrival, "s@shop.test", route, rcpts)


def test_defaults_move_on_deferral_rules_only() -> None:
    throttle = ResponseRuleConfig(name="t", match="421", statuses=["deferred"])
    block = ResponseRuleConfig(name="b", match="550", statuses=["bounced"], action="suspend_all")
    forced = ResponseRuleConfig(name="f", match="550", statuses=["bounced"], requeue=True)
    rate = RateRuleConfig(name="r", above_percent=30, recover_below_percent=10)
    bounces = RateRuleConfig(name="rb", measure="bounced", above_percent=30, recover_below_percent=10)
    feedback = FeedbackConfig(
        response_rules=[throttle, block, forced], rate_rules=[rate, bounces], builtin_rules=False
    )
    rules = AutomaticRules.from_config(feedback, builtin_rules(), True)
    assert rules.response == {"t", "f"} and rules.rate == {"r"}
    # the shipped Gmail throttle rule moves queued mail
    with_builtin = AutomaticRules.from_config(FeedbackConfig(), builtin_rules(), True)
    assert "google-rate-limited" in with_builtin.response


def test_move_reasons() -> None:
    google = "rule google-rate-limited: out2 deferred by google: 421"
    assert move_reason(EndpointState(suspensions={"google": google}), "google", RULES) == (
        f"suspended for google: {google}"
    )
    # another provider's mail stays; a suspension no rule or operator asked to move stays
    assert move_reason(EndpointState(suspensions={"google": google}), "yahoo", RULES) is None
    by_hand = EndpointState(suspensions={"google": "suspended by operator"})
    assert move_reason(by_hand, "google", RULES) is None
    asked = EndpointState(suspensions={"google": "suspended by operator"}, requested=frozenset({"google"}))
    assert move_reason(asked, "google", RULES) == "suspended for google: suspended by operator"
    # suspend_all and rate rules
    assert move_reason(EndpointState(suspensions={"all": "rate rule deferral-rate: x"}), "yahoo", RULES)
    # drains move only when asked; quarantines by moving rules or health checks
    assert move_reason(EndpointState(admin="drained"), "google", RULES) is None
    assert move_reason(EndpointState(admin="drained", requested=frozenset({"all"})), "google", RULES)
    assert move_reason(EndpointState(admin="quarantined", admin_by="dnsbl"), "google", RULES)
    assert move_reason(EndpointState(admin="quarantined", admin_by="feedback:other"), "google", RULES) is None
    quiet = AutomaticRules(RULES.response, RULES.rate, health_quarantines=False)
    assert move_reason(EndpointState(admin="quarantined", admin_by="relay-probe"), "x", quiet) is None
    # unplumbed: mail could never leave
    assert move_reason(EndpointState(bind_missing="192.0.2.55"), "google", RULES) == (
        "unplumbed: bind address 192.0.2.55 is not on this host"
    )
    assert move_reason(EndpointState(plumbed=False), "google", RULES) == (
        "unplumbed: no such transport in master.cf"
    )


def test_endpoint_state_from_redis_fields() -> None:
    lifted = endpoint_state({"state": "quarantined", "until": "100"}, {}, [], now=200.0)
    assert lifted.admin == "active"
    junk = endpoint_state({"state": "banana"}, {}, [], now=0.0)
    assert junk.admin == "active"  # junk reads as active, as in decisions
    drained = endpoint_state({"state": "drained", "requeue": "1", "reason": "x"}, {}, ["google"], now=0.0)
    assert drained.requested == {"all", "google"} and drained.admin_reason == "x"


def test_plan_moves_whole_messages_oldest_first_and_bounded() -> None:
    google = {"google": "rule google-rate-limited: 421"}
    states = {"out2": EndpointState(suspensions=google)}
    messages = [
        msg("NEW", "out2:", "a@gmail.com", arrival=3.0),
        msg("OLD", "out2:", "b@gmail.com", "c@yahoo.com", arrival=1.0),
        msg("YAHOO", "out2:", "d@yahoo.com", arrival=2.0),
        msg("AMAVIS", "smtp-amavis:[127.0.0.1]:10024", "e@gmail.com"),  # not ours: never touched
        msg("NEXTHOP", "out2:[10.0.0.1]:25", "f@gmail.com"),  # our name, another nexthop: not ours
        msg("DONE", "out2:"),  # nothing pending
    ]
    moves = plan_moves(messages, TARGETS, states, PROVIDERS, RULES, limit=10)
    assert [m.queue_id for m in moves] == ["OLD", "NEW"]
    assert moves[0].moving == {"google": ("b@gmail.com",)} and moves[0].staying == ("c@yahoo.com",)
    assert plan_moves(messages, TARGETS, states, PROVIDERS, RULES, limit=1)[0].queue_id == "OLD"
    assert bound_counts(messages, TARGETS) == {"out2": 4}
