"""Which rule a record trips: categories, numbers, the record's age; the reason names it."""

from __future__ import annotations

from datetime import date

from smtp_balancer.config.reputation import ReputationConfig, ReputationRuleConfig
from smtp_balancer.reputation.rules import reason, tripped
from smtp_balancer.state.reputation import Record

TODAY = date(2026, 12, 5)
RULES = ReputationConfig(
    rules=[
        ReputationRuleConfig(
            name="snds-complaints", source="snds", signal="complaint_rate", above=0.3, action="throttle"
        )
    ]
).active_rules


def rec(source: str, signal: str, value: str, day: date = TODAY, endpoint: str = "out2") -> Record:
    provider = "google" if source == "postmaster" else "microsoft"
    return Record(provider, source, signal, day, value, endpoint=endpoint, subject="127.0.0.3")


def test_the_shipped_rules_and_an_own_one():
    assert tripped(rec("postmaster", "ip_reputation", "BAD"), RULES, TODAY, 3).name == "google-ip-bad"
    assert tripped(rec("postmaster", "ip_reputation", "LOW"), RULES, TODAY, 3).name == "google-ip-low"
    assert tripped(rec("postmaster", "ip_reputation", "MEDIUM"), RULES, TODAY, 3) is None
    assert tripped(rec("snds", "filter_result", "RED"), RULES, TODAY, 3).name == "snds-red"
    assert tripped(rec("snds", "blocked", "yes"), RULES, TODAY, 3).name == "snds-blocked"
    assert tripped(rec("snds", "blocked", "no"), RULES, TODAY, 3) is None
    assert tripped(rec("snds", "complaint_rate", "1.5"), RULES, TODAY, 3).name == "snds-complaints"
    assert tripped(rec("snds", "complaint_rate", "0.1"), RULES, TODAY, 3) is None
    assert tripped(rec("snds", "complaint_rate", "junk"), RULES, TODAY, 3) is None


def test_an_old_record_or_a_domains_acts_on_nothing():
    assert tripped(rec("postmaster", "ip_reputation", "BAD", date(2026, 12, 1)), RULES, TODAY, 3) is None
    assert tripped(rec("postmaster", "ip_reputation", "BAD", date(2026, 12, 2)), RULES, TODAY, 3) is not None
    assert tripped(rec("postmaster", "ip_reputation", "BAD", endpoint=""), RULES, TODAY, 3) is None


def domain_rec(signal: str, value: str, day: date = TODAY) -> Record:
    return Record("google", "postmaster", signal, day, value, domain="shop.test")


def test_a_domains_spam_ratio_warns_above_a_tenth_percent_and_holds_above_three_tenths():
    assert tripped(domain_rec("spam_ratio", "0.0041"), RULES, TODAY, 3).name == "google-spam-rate-hold"
    assert tripped(domain_rec("spam_ratio", "0.003"), RULES, TODAY, 3).name == "google-spam-rate-warning"
    assert tripped(domain_rec("spam_ratio", "0.0012"), RULES, TODAY, 3).name == "google-spam-rate-warning"
    assert tripped(domain_rec("spam_ratio", "0.001"), RULES, TODAY, 3) is None
    assert tripped(domain_rec("spam_ratio", "0.0041", date(2026, 12, 1)), RULES, TODAY, 3) is None
    # a domain's record never trips an IP's rule, nor an IP's a domain's
    assert tripped(domain_rec("ip_reputation", "BAD"), RULES, TODAY, 3) is None
    ip = Record("google", "postmaster", "spam_ratio", TODAY, "0.5", endpoint="out2", subject="127.0.0.3")
    assert tripped(ip, RULES, TODAY, 3) is None


def test_domain_rules_take_domain_actions_and_statuses_need_values():
    own = ReputationRuleConfig(
        name="unsub", source="postmaster", signal="honor_unsubscribe", values=["NEEDS_WORK"], action="warn"
    )
    assert tripped(domain_rec("honor_unsubscribe", "NEEDS_WORK"), [own], TODAY, 3) is own
    assert tripped(domain_rec("honor_unsubscribe", "COMPLIANT"), [own], TODAY, 3) is None


def test_the_reason_names_the_record():
    record = rec("postmaster", "ip_reputation", "BAD")
    assert reason(RULES[1], record) == (
        "reputation rule google-ip-bad: postmaster ip_reputation BAD for 127.0.0.3 (out2) on 2026-12-05"
    )
    hold = next(r for r in RULES if r.name == "google-spam-rate-hold")
    assert reason(hold, domain_rec("spam_ratio", "0.0041")) == (
        "reputation rule google-spam-rate-hold: postmaster spam_ratio 0.0041 for shop.test on 2026-12-05"
    )
