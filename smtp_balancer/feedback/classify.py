"""Bounce and deferral classes from a reply, sans I/O: an ordered table of
(enhanced status codes, reply pattern) -> class, yours first, then the built-in
pack (bounce_classes.yaml). Delivered mail has no class ("none")."""

from __future__ import annotations

import re
from dataclasses import dataclass

from smtp_balancer.config.feedback import BounceClassRule, FeedbackConfig
from smtp_balancer.feedback.responses import load_pack

NONE = "none"  # delivered
OTHER = "other"


def builtin_classes() -> list[BounceClassRule]:
    return load_pack("bounce_classes.yaml", BounceClassRule)


@dataclass(frozen=True)
class _Compiled:
    name: str
    dsn: frozenset[str]
    pattern: re.Pattern[str] | None


class BounceClassifier:
    def __init__(self, rules: list[BounceClassRule]) -> None:
        self.rules = [
            _Compiled(r.class_, frozenset(r.dsn), re.compile(r.match) if r.match else None) for r in rules
        ]

    @classmethod
    def from_config(cls, feedback: FeedbackConfig) -> BounceClassifier:
        return cls(
            list(feedback.bounce_classes) + (builtin_classes() if feedback.builtin_bounce_classes else [])
        )

    def classify(self, status: str, dsn: str, response: str) -> str:
        if status == "sent":
            return NONE
        for rule in self.rules:
            if rule.dsn and dsn not in rule.dsn:
                continue
            if rule.pattern is not None and not rule.pattern.search(response):
                continue
            return rule.name
        return OTHER
