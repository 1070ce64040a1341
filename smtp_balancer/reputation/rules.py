"""Which reputation rule a record trips, the reason its action carries, and whether
an endpoint's records hold its warm-up. Sans I/O."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from smtp_balancer.config.reputation import RATIO_SIGNALS, ReputationRuleConfig
from smtp_balancer.state.reputation import HeldRecord, Record, recent

# an IP's verdicts as levels, one scale for both providers: 3 HIGH or GREEN, 2 MEDIUM or
# YELLOW, 1 LOW or RED, 0 BAD or blocked (the gauge, and the warm-up hold)
LEVELS = {
    ("postmaster", "ip_reputation"): {"HIGH": 3, "MEDIUM": 2, "LOW": 1, "BAD": 0},
    ("snds", "filter_result"): {"GREEN": 3, "YELLOW": 2, "RED": 1},
    ("snds", "blocked"): {"no": 3, "yes": 0},
}
LEVEL_NAMES = {"HIGH": 3, "MEDIUM": 2, "LOW": 1}


def tripped(
    record: Record, rules: list[ReputationRuleConfig], today: date, max_age_days: int
) -> ReputationRuleConfig | None:
    """The first rule the record trips, of a recent enough day: an endpoint's record
    trips the rules about IPs, a sending domain's those about domains."""
    if not recent(record.day, today, max_age_days) or not (record.endpoint or record.domain):
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


def warmup_hold(records: Iterable[HeldRecord], today: date, max_age_days: int, below: str) -> str:
    """Why an endpoint's warm-up holds its step ("" when it may go on): a source's
    newest verdict about one of its IPs, of a recent enough day, is under ``below``
    (MEDIUM: LOW, BAD, SNDS RED or blocked)."""
    newest: dict[tuple[str, str], tuple[str, int, HeldRecord]] = {}
    for r in records:
        scale = LEVELS.get((r.source, r.signal))
        level = scale.get(r.value) if scale else None
        if level is None or not recent(date.fromisoformat(r.day), today, max_age_days):
            continue
        key, held = (r.source, r.subject), newest.get((r.source, r.subject))
        if held is None or r.day > held[0] or (r.day == held[0] and level < held[1]):
            newest[key] = (r.day, level, r)
    worst = min(newest.values(), key=lambda n: (n[1], n[0]), default=None)
    if worst is None or worst[1] >= LEVEL_NAMES[below]:
        return ""
    r = worst[2]
    return f"held: {r.source} {r.signal} {r.value} for {r.subject} on {r.day}, below {below}"
