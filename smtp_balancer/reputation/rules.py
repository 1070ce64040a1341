"""Which reputation rule a record trips, and the reason its action carries. Sans I/O."""

from __future__ import annotations

from datetime import date

from smtp_balancer.config.reputation import ReputationRuleConfig
from smtp_balancer.state.reputation import Record


def tripped(
    record: Record, rules: list[ReputationRuleConfig], today: date, max_age_days: int
) -> ReputationRuleConfig | None:
    """The first rule the record trips: an endpoint's record, of a recent enough day."""
    if not record.endpoint or (today - record.day).days > max_age_days:
        return None
    for rule in rules:
        if rule.source != record.source or rule.signal != record.signal:
            continue
        if rule.values and record.value in rule.values:
            return rule
        if rule.above is not None and _number(record.value) > rule.above:
            return rule
    return None


def reason(rule: ReputationRuleConfig, record: Record) -> str:
    """Names the record: the rule, the source's verdict, the IP and the day it describes."""
    said = f"{record.source} {record.signal} {record.value}"
    about = f"{record.subject} ({record.endpoint})"
    return f"reputation rule {rule.name}: {said} for {about} on {record.day.isoformat()}"


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("-inf")
