"""DNSBL answer meaning: listings, refusals, and answers that are errors."""

from __future__ import annotations

from smtp_balancer.config.feedback import DnsblZone
from smtp_balancer.feedback.dnsbl import CLEAN, ERROR, LISTED, interpret, query_name

ZEN = DnsblZone(zone="zen.spamhaus.org")


def test_query_names() -> None:
    assert query_name("192.0.2.1", "zen.spamhaus.org") == "1.2.0.192.zen.spamhaus.org"
    assert query_name("2001:db8::1", "z.test").startswith(
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0"
    )


def test_no_record_is_clean() -> None:
    assert interpret(ZEN, "192.0.2.1", []).verdict == CLEAN


def test_a_127_0_0_x_answer_is_a_listing() -> None:
    res = interpret(ZEN, "192.0.2.1", ["127.0.0.2", "127.0.0.4"])
    assert res.verdict == LISTED and res.detail == "127.0.0.2,127.0.0.4"


def test_spamhaus_refusal_codes_are_errors_not_listings() -> None:
    for code in ("127.255.255.252", "127.255.255.254", "127.255.255.255"):
        res = interpret(ZEN, "192.0.2.1", [code])
        assert res.verdict == ERROR and "refused" in res.detail


def test_answers_outside_loopback_are_errors() -> None:
    assert interpret(ZEN, "192.0.2.1", ["203.0.113.7"]).verdict == ERROR
    assert interpret(ZEN, "192.0.2.1", ["127.0.0.1"]).verdict == ERROR


def test_configured_listed_codes_are_exact() -> None:
    zone = DnsblZone(zone="z.test", listed=["127.0.0.10"])
    assert interpret(zone, "192.0.2.1", ["127.0.0.10"]).verdict == LISTED
    assert interpret(zone, "192.0.2.1", ["127.0.0.2"]).verdict == ERROR
