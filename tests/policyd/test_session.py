"""Joining RCPT and END-OF-MESSAGE requests by instance, and actions."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

from prometheus_client import REGISTRY

import policyd
from policyd import metrics
from policyd.session import (
    DEFER_ACTION,
    DUNNO,
    EXIM_HEADERS,
    READ_ATTRIBUTES,
    Immediate,
    InstanceJoin,
    abandoned,
    action_for,
    facts_of,
    handle,
)
from smtp_balancer.config import validate_config
from smtp_balancer.decision.facts import Decision, Facts, Route
from smtp_balancer.engine import Engine
from smtp_balancer.generation import ATTRIBUTE
from smtp_balancer.observe.ratelimit import LogLimiter
from tests.conftest import BASE as BASE_CONFIG

BASE = {"request": "smtpd_access_policy", "instance": "a1.b2.3", "sender": "s@shop.test"}


def test_rcpt_collected_and_joined_at_end_of_message():
    join = InstanceJoin()
    for rcpt in ("x@gmail.com", "y@yahoo.com", "z@other.test"):
        assert handle({**BASE, "protocol_state": "RCPT", "recipient": rcpt}, join) == Immediate(DUNNO)
    facts = handle(
        {
            **BASE,
            "protocol_state": "END-OF-MESSAGE",
            "recipient": "",
            "recipient_count": "3",
            "size": "2048",
            "sasl_username": "app",
            "client_address": "10.0.0.5",
            "queue_id": "Q1",
        },
        join,
    )
    assert facts == Facts(
        sender="s@shop.test",
        recipients=("x@gmail.com", "y@yahoo.com", "z@other.test"),
        sasl_username="app",
        client_address="10.0.0.5",
        size=2048,
        queue_id="Q1",
        recipient_count=3,
    )
    assert len(join) == 0


def test_single_recipient_without_rcpt_stage_and_exim_list():
    facts = handle({**BASE, "protocol_state": "END-OF-MESSAGE", "recipient": "a@b.test"}, InstanceJoin())
    assert isinstance(facts, Facts) and facts.recipients == ("a@b.test",)
    exim = handle(
        {
            "request": "smtpd_access_policy",
            "protocol_state": "END-OF-MESSAGE",
            "recipients": "a@b.test, c@d.test",
        },
        InstanceJoin(),
    )
    assert isinstance(exim, Facts) and exim.recipients == ("a@b.test", "c@d.test")


def test_recipients_missing_at_end_of_message_are_counted_and_logged(caplog):
    # RCPT went to another process (a reconnect to another worker): 0 of 3 known
    def unknown() -> float:
        return REGISTRY.get_sample_value("smtp_balancer_policy_recipients_unknown_total") or 0.0

    before = unknown()
    notes = LogLimiter(logging.getLogger("test.session"))
    eom = {**BASE, "protocol_state": "END-OF-MESSAGE", "queue_id": "Q9", "recipient_count": "3"}
    facts = handle(eom, InstanceJoin(), notes=notes)
    assert isinstance(facts, Facts) and facts.recipients == () and facts.quota_count == 3
    assert unknown() == before + 1
    assert "queue id Q9: 0 of 3 recipients known at END-OF-MESSAGE" in caplog.text
    # not missing: a repeated RCPT TO (Postfix counts it twice, the decision once), a lone
    # recipient named at END-OF-MESSAGE, an Exim list, and more RCPTs than accepted
    join = InstanceJoin()
    for rcpt in ("x@gmail.com", "x@gmail.com"):
        handle({**BASE, "protocol_state": "RCPT", "recipient": rcpt}, join)
    twice = handle({**eom, "recipient_count": "2"}, join, notes=notes)
    assert isinstance(twice, Facts) and twice.recipients == ("x@gmail.com",)
    handle({**eom, "recipient": "a@b.test", "recipient_count": "1"}, InstanceJoin(), notes=notes)
    handle({**eom, "recipients": "a@b.test,c@d.test", "recipient_count": "2"}, InstanceJoin(), notes=notes)
    for rcpt in ("x@gmail.com", "y@gmail.com"):
        handle({**BASE, "protocol_state": "RCPT", "recipient": rcpt}, join)
    handle({**eom, "recipient_count": "1"}, join, notes=notes)
    assert unknown() == before + 1


def test_other_states_and_requests_answer_dunno():
    join = InstanceJoin()
    assert handle({**BASE, "protocol_state": "CONNECT"}, join) == Immediate(DUNNO)
    odd = handle({"request": "something_else"}, join)
    assert isinstance(odd, Immediate) and odd.action == DUNNO and odd.note


def test_garbage_numbers_are_ignored():
    facts = handle(
        {**BASE, "protocol_state": "END-OF-MESSAGE", "size": "big", "recipient_count": "-1"}, InstanceJoin()
    )
    assert isinstance(facts, Facts) and facts.size is None and facts.recipient_count is None


def test_abandoned_instances_are_bounded_and_expire():
    now = [0.0]
    join = InstanceJoin(max_instances=100, ttl_s=60, clock=lambda: now[0])
    evicted_before = metrics.JOINS_EVICTED._value.get()
    for i in range(250):
        join.add(f"i{i}", "r@x.test")
    assert len(join) == 100 and metrics.JOINS_EVICTED._value.get() - evicted_before == 150
    now[0] = 61
    join.add("fresh", "r@x.test")
    assert len(join) == 1


def test_actions():
    assert action_for(Decision("route", "r", Route("out2"), "out2")) == "FILTER out2:"
    assert (
        action_for(Decision("route", "r", Route("relay1", "[mx.test]:25"), "relay1"))
        == "FILTER relay1:[mx.test]:25"
    )
    assert action_for(Decision("defer", "r")) == DEFER_ACTION
    assert action_for(Decision("default", "r")) == DUNNO and action_for(Decision("no_rule", "r")) == DUNNO


def test_a_long_exim_recipient_list_is_deduplicated_in_order():
    rcpts = [f"u{i % 700}@d{i % 7}.test" for i in range(2_000)]
    facts = handle(
        {**BASE, "protocol_state": "END-OF-MESSAGE", "instance": "", "recipients": ",".join(rcpts)},
        InstanceJoin(),
    )
    assert isinstance(facts, Facts)
    assert facts.recipients == tuple(dict.fromkeys(rcpts)) and len(facts.recipients) == 700


def test_reload_applies_live_settings_and_names_the_rest():
    from policyd.server import PolicyServer
    from smtp_balancer.config.services import PolicydConfig

    server = PolicyServer(Engine(validate_config(BASE_CONFIG)), PolicydConfig())
    restart = server.apply(
        PolicydConfig(listen=["inet:127.0.0.1:10041"], join_ttl_s=60, max_concurrent_decisions=8)
    )
    assert restart == ["listen"]
    assert server.join.ttl_s == 60 and server.decisions._value == 8
    assert server.config.listen == ["inet:127.0.0.1:10040"]  # the socket in use stays


def test_joins_are_bounded_in_bytes_oldest_first():
    """20,000 RCPTs of 2 KB recipients held 40 MB before; now at most the byte budget."""
    now = [0.0]
    join = InstanceJoin(max_instances=50_000, ttl_s=900, clock=lambda: now[0], max_bytes=1024 * 1024)
    evicted_before = metrics.JOINS_EVICTED._value.get()
    big = "x" * 2_000 + "@example.test"
    for i in range(20_000):
        join.add(f"i{i}", big)
    assert join.bytes <= 1024 * 1024
    assert join.bytes == sum(len(f"i{i}") + len(big) for i in range(20_000 - len(join), 20_000))
    assert metrics.JOINS_EVICTED._value.get() - evicted_before == 20_000 - len(join)
    assert join.take("i0") == [] and join.take("i19999") == [big]  # the oldest went first


def test_a_request_its_client_gave_up_on_is_not_decided():
    from dataclasses import dataclass

    from policyd.session import Client

    @dataclass
    class Seen(Client):
        closed: bool = False
        waited: float | None = None
        recent_s: float | None = None  # provably arrived that long ago at most

        def gone(self) -> bool:
            return self.closed

        def waited_s(self) -> float | None:
            return self.waited

        def arrived_within(self, seconds: float) -> bool:
            return self.recent_s is not None and self.recent_s < seconds

    now = 1_800_000_000.0
    exim = {"request": "smtpd_access_policy", "recipients": "a@x.test"}
    # Exim: by age against exim.readsocket_timeout_s, whatever the socket says (it half-closes)
    fresh = {**exim, "sent_at": str(int((now - 1.9) * 1e6))}
    stale = {**exim, "sent_at": str(int((now - 2.0) * 1e6))}
    assert abandoned(fresh, now, 2.0, 10.0, Seen(closed=True, waited=30)) == ""
    assert (
        abandoned(stale, now, 2.0, 10.0, Seen())
        == "Exim sent it 2.0s ago (timeout 2s, 0s of it to decide and answer)"
    )
    # within the margin of the timeout: an answer would arrive after Exim gave up
    assert abandoned(fresh, now, 2.0, 10.0, Seen(), margin_s=0.25).startswith("Exim sent it 1.9s ago")
    assert abandoned(fresh, now, 2.0, 10.0, Seen(), margin_s=0.05) == ""
    assert abandoned({**exim, "sent_at": "garbage"}, now, 2.0, 10.0, Seen(closed=True)) == ""  # decide
    # only ASCII decimals are a time: '²' and Arabic-Indic digits pass str.isdigit()
    for junk in ("\u00b2", "\u0661\u0662", "9" * 5000):
        assert abandoned({**exim, "sent_at": junk}, now, 2.0, 10.0, Seen()) == "", junk
    assert abandoned(exim, now, 2.0, 10.0, Seen(closed=True)) == ""  # rendered before sent_at
    # Postfix: a closed connection, or a request older than its timeout (TCP_INFO)
    postfix = {"request": "smtpd_access_policy", "recipient": "a@x.test"}
    assert abandoned(postfix, now, 2.0, 10.0, Seen(waited=9.9)) == ""
    assert abandoned(postfix, now, 2.0, 10.0, Seen()) == ""  # a unix socket: age unknown
    assert abandoned(postfix, now, 2.0, 10.0, Seen(waited=10.0)) == (
        "it arrived 10.0s ago and Postfix waits 10s"
    )
    assert abandoned(postfix, now, 2.0, 10.0, Seen(closed=True)) == (
        "Postfix closed the connection before the answer"
    )
    # arrived under RECENT_S ago by the loop's own bound: the kernel is not asked
    assert abandoned(postfix, now, 2.0, 10.0, Seen(closed=True, waited=30, recent_s=0.1)) == ""
    assert abandoned(postfix, now, 2.0, 10.0, Seen(closed=True, recent_s=0.6)).startswith("Postfix closed")
    # never beyond Postfix's own timeout, however small
    assert abandoned(postfix, now, 2.0, 0.05, Seen(waited=0.2, recent_s=0.1)).startswith("it arrived 0.2s")


def test_exim_requests_are_classified_like_the_milter_does():
    from smtp_balancer.config.services import MilterConfig
    from smtp_balancer.decision.classes import MessageClasses

    classes = MessageClasses.from_config(MilterConfig(trusted_networks=["10.0.0.0/8"]))
    join = InstanceJoin(100, 60)
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": "END-OF-MESSAGE",
        "recipients": "a@x.test",
        "client_address": "10.1.2.3",
        "header_class": "",
        "header_precedence": "",
        "header_list_unsubscribe": "",
        "header_list_id": "",
    }

    def klass(**attrs: str) -> str | None:
        facts = handle({**base, **attrs}, join, classes)
        assert isinstance(facts, Facts)
        return facts.message_class

    assert klass() == "transactional"  # the default class
    assert klass(header_precedence="Bulk") == "bulk"
    assert klass(header_list_unsubscribe="yes") == "bulk"
    assert klass(header_class="bulk") == "bulk"  # trusted client
    assert klass(header_class="Bulk ", header_precedence="list") == "bulk"
    # the class header from a stranger counts for nothing; Precedence still does
    assert klass(header_class="bulk", client_address="192.0.2.9") == "transactional"
    assert klass(header_class="bulk", client_address="") == "bulk"  # local submission
    assert klass(header_class="no-such-class") == "transactional"
    # Postfix's requests carry no headers: no class, as before
    postfix = {k: v for k, v in base.items() if not k.startswith("header_")}
    facts = handle(postfix, join, classes)
    assert isinstance(facts, Facts) and facts.message_class is None


def test_every_numeric_attribute_is_a_plain_decimal():
    from policyd.session import NUMBER_DIGITS, TIME_DIGITS
    from smtp_balancer.state.values import parse_int

    assert parse_int("1234", NUMBER_DIGITS) == 1234 and parse_int("007", NUMBER_DIGITS) == 7
    for junk in ("", None, "12a", "-1", "+1", " 1", "1.0", "\u00b2", "\u0661", "1" * 16):
        assert parse_int(junk, NUMBER_DIGITS) is None, junk
    assert parse_int("1" * 20, TIME_DIGITS) == int("1" * 20)
    join = InstanceJoin(100, 60)
    request = {"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE", "recipient": "a@x.test"}
    facts = handle({**request, "size": "\u00b2", "recipient_count": "\u0663"}, join)
    assert facts.size is None and facts.recipient_count is None


def test_the_parser_keeps_every_attribute_the_daemon_reads():
    """The connection's parser drops the attributes not in READ_ATTRIBUTES: a request
    attribute read anywhere in policyd must be named there, or it would read as absent."""
    read = set()
    for source in (Path(policyd.__file__).parent).glob("*.py"):
        text = source.read_text()
        read |= set(re.findall(r"request\.get\(\"(\w+)\"", text))
        read |= set(re.findall(r"request\[\"(\w+)\"\]", text))
        read |= set(re.findall(r"\"(\w+)\" (?:not )?in (?:later\.)?request\b", text))
    assert {"request", "protocol_state", "instance", "sent_at", "recipients"} <= read  # the scan works
    assert read <= READ_ATTRIBUTES
    assert {attr for attr, _ in EXIM_HEADERS} | {ATTRIBUTE} <= READ_ATTRIBUTES  # read by variable


def test_a_messages_recipients_are_the_joins_then_the_requests_each_once_in_first_seen_order():
    """facts_of against the rule written out: the join's recipients, then the request's
    ``recipient`` and each of ``recipients`` (stripped, empty ones dropped), each once;
    per recipient when the request has a ``recipients`` list (Exim)."""
    rng = random.Random(36)
    addresses = ["a@x.test", "b@y.test", " a@x.test", "c@z.test ", "a@x.test ", "é@ü.test"]
    for _ in range(5_000):
        collected = [rng.choice(addresses) for _ in range(rng.choice([0, 1, 1, 1, 2, 3]))]
        request = {**BASE, "protocol_state": "END-OF-MESSAGE"}
        if rng.random() < 0.7:
            request["recipient"] = rng.choice(["", " ", *addresses])
        if rng.random() < 0.3:
            request["recipients"] = ",".join(
                rng.choice(["", " ", *addresses]) for _ in range(rng.randint(1, 3))
            )
        want = dict.fromkeys(collected)
        for more in (request.get("recipient", ""), *request.get("recipients", "").split(",")):
            if more.strip():
                want[more.strip()] = None
        facts = facts_of(request, list(collected))
        assert facts.recipients == tuple(want), (collected, request)
        assert facts.per_recipient == ("recipients" in request)
