"""Tenants: sender domains to a bounded label, joined from arrival lines to deliveries."""

from __future__ import annotations

from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.feedback.processor import Processor
from smtp_balancer.feedback.responses import ResponseMatcher, builtin_rules
from smtp_balancer.feedback.tenants import SenderBook

NOW = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC
TENANTS = TenantTable(["shop.test", "news.example"])


def test_the_sender_book_keeps_only_the_newest_entries() -> None:
    book = SenderBook(limit=3)
    for i in range(5):
        book.note(f"Q{i}", "shop.test")
    assert len(book) == 3
    assert book.tenant("Q0") == "other" and book.tenant("Q4") == "shop.test"


def postfix(tenants: TenantTable = TENANTS) -> Processor:
    return Processor(ProviderTable.build(), ResponseMatcher(builtin_rules()), {"out1"}, tenants=tenants)


QMGR = "Nov 24 02:48:10 mta postfix/qmgr[9500]: {qid}: from=<{sender}>, size=812, nrcpt=1 (queue active)"
DELIVERY = (
    "Nov 24 02:48:11 mta postfix/out1/smtp[9536]: {qid}: to=<bob@gmail.com>, "
    "relay=gmail-smtp-in.l.google.com[142.250.1.27]:25, delay=0.42, delays=0.01/0/0.2/0.21, "
    "dsn=2.0.0, status=sent (250 2.0.0 OK)"
)


def test_postfix_deliveries_take_the_tenant_of_their_qmgr_from_line() -> None:
    p = postfix()
    lines = [
        QMGR.format(qid="AAA111", sender="news@shop.test"),
        QMGR.format(qid="BBB222", sender="x@elsewhere.test"),
        DELIVERY.format(qid="AAA111"),
        DELIVERY.format(qid="BBB222"),
        DELIVERY.format(qid="CCC333"),  # arrived before a restart: unknown
    ]
    batch = p.process(lines, "u", NOW)
    assert [d.tenant for d in batch.deliveries] == ["shop.test", "other", "other"]
    assert batch.tenant_outcomes == {
        ("shop.test", "2026111811", "sent"): 1,
        ("other", "2026111811", "sent"): 2,
    }
    assert batch.ignored == 2  # the from= lines are not deliveries
    # the join survives batch boundaries: a retry in a later batch keeps the tenant
    assert postfix_later(p) == ["shop.test"]


def postfix_later(p: Processor) -> list[str]:
    return [d.tenant for d in p.process([DELIVERY.format(qid="AAA111")], "v", NOW).deliveries]


def test_without_tenants_every_delivery_is_other_and_nothing_is_remembered() -> None:
    p = postfix(TenantTable([]))
    batch = p.process(
        [QMGR.format(qid="AAA111", sender="a@shop.test"), DELIVERY.format(qid="AAA111")], "u", NOW
    )
    assert [d.tenant for d in batch.deliveries] == ["other"]
    assert batch.tenant_outcomes == {} and len(p.senders) == 0


def exim() -> Processor:
    return Processor(
        ProviderTable.build(),
        ResponseMatcher(builtin_rules()),
        {"out2"},
        exim_transports={"sb_out2": "out2"},
        tenants=TENANTS,
    )


TAIL = 'R=sb_direct T=sb_out2 H=h [192.0.2.1] C="250 ok"'


def test_exim_deliveries_take_the_tenant_of_their_arrival_or_their_f_field() -> None:
    lines = [
        "2026-12-02 09:22:20 1xYgXf-0006Qf-2X <= news@shop.test H=([127.0.0.1]) [127.0.0.1] P=esmtp S=343",
        "2026-12-02 09:22:20 1xYgXf-0006Qf-3Y <= <> R=1xYgXf-0006Qf-2X U=Debian-exim P=local S=1200",
        f"2026-12-02 09:22:23 1xYgXf-0006Qf-2X => u0@gmail.com {TAIL}",
        f"2026-12-02 09:22:23 1xYgXf-0006Qf-3Y => u1@gmail.com {TAIL}",
        # log_selector +sender_on_delivery: the line names its sender
        "2026-12-02 09:22:24 1xYgXf-0006Qf-4Z => u2@gmail.com F=<a@news.example> R=sb_direct T=sb_out2 H=h "
        '[192.0.2.1] C="250 ok"',
    ]
    batch = exim().process(lines, "u", NOW)
    assert [d.tenant for d in batch.deliveries] == ["shop.test", "other", "news.example"]
    assert [d.recipient for d in batch.deliveries] == ["u0@gmail.com", "u1@gmail.com", "u2@gmail.com"]
