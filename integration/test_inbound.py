"""Issue #29: mail this host receives is never routed through an endpoint.

A gateway that relays ``inbound.test`` to a backend (relay_domains + transport_maps)
and hosts ``local.test`` (virtual mailboxes), with a catch-all rule: before
``inbound_domains``, FILTER sent every inbound message out through an egress
endpoint to the domain's public address (FILTER overrides transport_maps).
"""

from __future__ import annotations

import pwd
import shutil
from collections import Counter
from pathlib import Path

from integration.configs import ENDPOINT_IP
from integration.postfix import make_shared_dir
from integration.sink import Sink
from integration.waits import wait_until
from integration.workloads import assert_counted_exactly

OUTBOUND = ["gmail.com", "yahoo.com", "outlook.com"]
INBOUND = {"inbound_domains": ["inbound.test", "local.test"]}
MIXED = 10  # messages to one outbound and one inbound recipient


# what reaches the gateway's backend: the relayed messages and the mixed ones' inbound part
BACKEND_RECIPIENTS = sorted(
    [f"user{i}@inbound.test" for i in range(1000, 1100)]
    + [f"m{i}@inbound.test" for i in range(3000, 3000 + MIXED)]
)


def send_gateway_mail(system) -> None:
    """Over SMTP: 400 outbound messages, 100 to the relay domain, 100 to the local domain,
    and MIXED to one outbound and one inbound recipient; none refused."""
    outbound = system.send_many(400, recipients=lambda i: [f"user{i}@{OUTBOUND[i % 3]}"])
    relayed = system.send_many(100, start=1000, recipients=lambda i: [f"user{i}@inbound.test"])
    local = system.send_many(100, start=2000, recipients=lambda i: [f"user{i}@local.test"])
    mixed = system.send_many(
        MIXED, start=3000, recipients=lambda i: [f"m{i}@gmail.com", f"m{i}@inbound.test"]
    )
    assert outbound == relayed == local == mixed == []


def _gateway_main(base: Path, backend_port: int) -> str:
    """The operator's own main.cf: a relay domain to a backend, a virtual mailbox domain."""
    (base / "transport").write_text(f"inbound.test relay:[127.0.0.1]:{backend_port}\n")
    (base / "vmailbox").write_text("@local.test local.test/\n")  # a catch-all Maildir
    vmail = base / "vmail"
    vmail.mkdir()
    nobody = pwd.getpwnam("nobody")
    shutil.chown(vmail, user=nobody.pw_uid, group=nobody.pw_gid)
    return (
        "relay_domains = inbound.test\n"
        f"transport_maps = texthash:{base}/transport\n"
        "virtual_mailbox_domains = local.test\n"
        f"virtual_mailbox_base = {vmail}\n"
        f"virtual_mailbox_maps = texthash:{base}/vmailbox\n"
        f"virtual_uid_maps = static:{nobody.pw_uid}\n"
        f"virtual_gid_maps = static:{nobody.pw_gid}\n"
    )


def _maildir_count(base: Path) -> int:
    new = base / "vmail" / "local.test" / "new"
    return len(list(new.iterdir())) if new.is_dir() else 0


def test_postfix_gateway_routes_outbound_mail_and_leaves_inbound_mail_alone(mail_system):
    backend = Sink()  # the gateway's internal backend for inbound.test
    backend.start()
    operator = make_shared_dir("sb-operator-")  # Postfix's virtual(8) must reach it
    try:
        ms = mail_system(INBOUND, domains=OUTBOUND, postfix_main=_gateway_main(operator, backend.port))
        send_gateway_mail(ms)
        got = ms.sink.wait_for(400 + MIXED, timeout=180)
        backend.wait_for(100 + MIXED, timeout=120)
        wait_until(
            lambda: _maildir_count(operator) >= 100, timeout=120, what="100 messages in local.test's Maildir"
        )
        assert _maildir_count(operator) == 100
    finally:
        backend.stop()
        shutil.rmtree(operator, ignore_errors=True)
    # the sink plays the public internet: no inbound recipient ever reached it
    assert not [r for m in got for r in m.rcpt_tos if r.endswith(("@inbound.test", "@local.test"))]
    routed = [m for m in got if m.header("X-Test-Seq") and int(m.header("X-Test-Seq") or 0) < 1000]
    assert len(routed) == 400
    assert set(Counter(m.peer_ip for m in routed)) <= set(ENDPOINT_IP.values())
    # a mixed message gets no route (FILTER would take both parts): each part goes
    # where the MTA's own tables send it, the remote one by the default transport
    mixed_out = [m for m in got if int(m.header("X-Test-Seq") or 0) >= 3000]
    assert len(mixed_out) == MIXED and {m.peer_ip for m in mixed_out} == {"127.0.0.1"}
    assert sorted(r for m in backend.messages for r in m.rcpt_tos) == BACKEND_RECIPIENTS
    log = ms.postfix.log_text()
    assert "status=bounced" not in log and "loops back to myself" not in log
    # the inbound messages spent no warm-up quota
    assert_counted_exactly(ms.rdb, ENDPOINT_IP, 400, [ms.policyd])


BACKEND_HOST = "127.0.0.12"  # the Exim gateway's backend for its relay_to_domains
EXIM_BACKEND_ROUTER = """\
# the operator's router for the domains this gateway relays
backend:
  driver = manualroute
  domains = +relay_to_domains
  route_list = * {backend}
  transport = backend_smtp
"""
EXIM_LOCAL_ROUTER = """\
# the operator's router for this host's own domains: a Maildir
local_maildir:
  driver = accept
  domains = +local_domains
  transport = maildir
"""
EXIM_BACKEND_TRANSPORT = """\
backend_smtp:
  driver = smtp
  port = {port}

maildir:
  driver = appendfile
  directory = {maildir}
  maildir_format
  user = Debian-exim

"""


def test_exim_gateway_routes_outbound_recipients_and_leaves_inbound_ones_alone(exim_system):
    backend = Sink(BACKEND_HOST)
    backend.start()
    maildir = make_shared_dir("sb-exim-maildir-")  # Exim delivers as Debian-exim
    shutil.chown(maildir, user="Debian-exim", group="Debian-exim")
    new = maildir / "Maildir" / "new"
    try:
        es = exim_system(
            INBOUND,
            operator={
                "relay_domains": "inbound.test",
                "local_domains": "local.test",
                "own_router": EXIM_BACKEND_ROUTER.format(backend=BACKEND_HOST) + EXIM_LOCAL_ROUTER,
                "own_transport": EXIM_BACKEND_TRANSPORT.format(
                    port=backend.port, maildir=maildir / "Maildir"
                ),
            },
        )
        send_gateway_mail(es)
        got = es.sink.wait_for(400 + MIXED, timeout=240)
        backend.wait_for(100 + MIXED, timeout=240)
        wait_until(lambda: new.is_dir() and len(list(new.iterdir())) >= 100, 120, "100 local messages")
        assert len(list(new.iterdir())) == 100
    finally:
        backend.stop()
        shutil.rmtree(maildir, ignore_errors=True)
    assert not [r for m in got for r in m.rcpt_tos if r.endswith(("@inbound.test", "@local.test"))]
    # Exim routes each recipient apart: a mixed message's remote part still takes its route
    assert len(got) == 400 + MIXED
    assert set(Counter(m.peer_ip for m in got)) <= set(ENDPOINT_IP.values())
    assert sorted(r for m in backend.messages for r in m.rcpt_tos) == BACKEND_RECIPIENTS
    log = es.exim.log_text()
    assert " ** " not in log and "Frozen" not in log
    # quota for the routed recipients only: the inbound ones are the MTA's
    assert_counted_exactly(es.rdb, ENDPOINT_IP, 400 + MIXED, [es.policyd])


def test_the_milter_leaves_inbound_mail_alone_too(mail_system):
    """The milter decides with the same planner: SMTP mail (smtpd_milters, no policy
    daemon) and local submissions (sendmail, non_smtpd_milters) to inbound domains get
    no route header, and outbound mail still does."""
    backend = Sink()
    backend.start()
    operator = make_shared_dir("sb-operator-")
    try:
        ms = mail_system(
            INBOUND,
            policy=False,
            milter=True,
            domains=OUTBOUND,
            postfix_main=_gateway_main(operator, backend.port),
        )
        assert ms.send_many(30, recipients=lambda i: [f"user{i}@{OUTBOUND[i % 3]}"]) == []
        assert ms.send_many(20, start=1000, recipients=lambda i: [f"user{i}@inbound.test"]) == []
        for i in range(10):
            ms.sendmail("cron@shop.test", [f"root{i}@local.test"], seq=2000 + i)
            ms.sendmail("cron@shop.test", [f"ops{i}@inbound.test"], seq=3000 + i)
        got = ms.sink.wait_for(30, timeout=120)
        backend.wait_for(30, timeout=120)
        wait_until(lambda: _maildir_count(operator) >= 10, timeout=120, what="10 messages in the Maildir")
        assert _maildir_count(operator) == 10
    finally:
        backend.stop()
        shutil.rmtree(operator, ignore_errors=True)
    assert set(Counter(m.peer_ip for m in got)) <= set(ENDPOINT_IP.values())
    assert len(backend.messages) == 30
    assert not [m for m in backend.messages if m.header("X-Egress-Route")]  # never routed
    assert "status=bounced" not in ms.postfix.log_text()
