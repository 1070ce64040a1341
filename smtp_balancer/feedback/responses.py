"""Response rules: which rule, if any, a delivery's remote reply matches. Sans I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from smtp_balancer.config.feedback import FeedbackConfig, ResponseRuleConfig
from smtp_balancer.config.yaml_reader import shipped_pack
from smtp_balancer.feedback.delivery_log import Delivery

T = TypeVar("T")


def load_pack(name: str, model: type[T]) -> list[T]:
    """A shipped YAML list beside this module (rules.yaml, bounce_classes.yaml), validated."""
    return shipped_pack("smtp_balancer.feedback", name, model)


def builtin_rules() -> list[ResponseRuleConfig]:
    """The shipped pack (rules.yaml beside this module)."""
    return load_pack("rules.yaml", ResponseRuleConfig)


def applied_rules(feedback: FeedbackConfig) -> list[ResponseRuleConfig]:
    """The response rules a config applies: its own first, then the shipped pack unless
    ``builtin_rules: false`` (the feedback daemon, and replay's simulation of it)."""
    return list(feedback.response_rules) + (builtin_rules() if feedback.builtin_rules else [])


@dataclass(frozen=True)
class CompiledRule:
    config: ResponseRuleConfig
    pattern: re.Pattern[str]
    providers: frozenset[str]
    statuses: frozenset[str]
    classes: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.config.name


class ResponseMatcher:
    """First matching rule wins: the operator's rules, then the built-in pack."""

    def __init__(self, rules: Sequence[ResponseRuleConfig]) -> None:
        self.rules = [
            CompiledRule(
                r, re.compile(r.match), frozenset(r.providers), frozenset(r.statuses), frozenset(r.classes)
            )
            for r in rules
        ]
        # sent lines are most of a log; skip matching them unless some rule asks for them
        self.has_sent_rules = any("sent" in r.statuses for r in self.rules)

    def match(self, delivery: Delivery) -> CompiledRule | None:
        for rule in self.rules:
            if delivery.status not in rule.statuses:
                continue
            if rule.providers and delivery.provider not in rule.providers:
                continue
            if rule.classes and delivery.bounce_class not in rule.classes:
                continue
            if rule.pattern.search(delivery.response):
                return rule
        return None
