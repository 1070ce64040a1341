"""Which reputation rule a record trips, and the reason its action carries. Sans I/O."""

from __future__ import annotations

from datetime import date

from smtp_balancer.config.reputation import RATIO_SIGNALS, ReputationRuleConfig
from smtp_balancer.state.reputation import Record


def tripped(
    record: Record, rules: list[ReputationRuleConfig], today: date, max_age_days: int
) -> ReputationRuleConfig | None:
    """The first rule the record trips, of a recent enough day: an endpoint's record
    trips the rules about IPs, a sending domain's those about domains."""
    if (today - record.day).days > max_age_days or not (record.endpoint or record.domain):
        return None
    for rule in rules:
        if rule.source != record.source or rule.signal != record.signal:
            continue
        if rule.per_domain == bool(record.endpoint):
            continue
        if rule.values and record.value in rule.values:
            return rule
        scale = 100 if rule.signal in RATIO_SIGNALS else 1  # a ratio against a percent
        if rule.above is not None and _number(record.value) * scale > rule.above:
            return rule
    return None


def reason(rule: ReputationRuleConfig, record: Record) -> str:
    """Names the record: the rule, the source's verdict, the IP and the day it describes."""
    said = f"{record.source} {record.signal} {record.value}"
    about = f"{record.subject} ({record.endpoint})" if record.endpoint else record.domain
    return f"reputation rule {rule.name}: {said} for {about} on {record.day.isoformat()}"


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("-inf")
