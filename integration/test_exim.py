"""Issue #6 acceptance, Exim part: a real Exim 4 configured by `render exim` routes by
the policy daemon's answers through ``${readsocket}``, proven at the sink."""

from __future__ import annotations

import smtplib
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.configs import BULK_HEADERS, CLASS_POOLS, ENDPOINT_IP, HELO
from integration.daemons import CLI
from integration.exim import EXIM_RELAY_SOURCE, EximInstance, EximSystem, exim_binary
from integration.statistics import assert_shares
from integration.waits import wait_until

DEFAULT_ROUTE_IP = "127.0.0.1"  # the operator's plain transport: no interface set
RELAY_IP = EXIM_RELAY_SOURCE

EQUAL_WEIGHTS = {
    "pools": {
        "main": {
            "endpoints": [{"endpoint": ep, "weight": 1} for ep in ENDPOINT_IP],
            # every endpoint drained: the sender is told to retry, nothing is routed
            "overflow": "defer",
        },
        "viarelay": {"endpoints": [{"endpoint": "relay1"}]},
    },
    "rules": [
        {"name": "relayed", "pool": "viarelay", "sender_domain": ["relay.test"]},
        {"name": "all", "pool": "main"},
    ],
}


@pytest.fixture
def exim(exim_system: Callable[..., EximSystem]) -> EximSystem:
    return exim_system(EQUAL_WEIGHTS)


def cli(es: EximSystem, *args: str) -> str:
    out = subprocess.run([CLI, "-c", str(es.config_path), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def deliveries(es: EximSystem, router: str, expected: int = 0) -> int:
    """Deliveries Exim logged through ``router`` (``=>`` lines: first recipient of each).

    Exim logs a delivery just after the sink's 250, so this waits (briefly) for
    ``expected`` lines before counting: the count can still come out higher."""

    def count() -> int:
        return sum(
            1 for line in es.exim.log_text().splitlines() if " => " in line and f" R={router} " in line
        )

    if expected:
        wait_until(lambda: count() >= expected, timeout=10, what=f"{expected} deliveries by {router}")
    return count()


def test_weights_1_1_1_over_300_messages(exim: EximSystem) -> None:
    assert exim.send_many(300, threads=6) == []
    got = exim.sink.wait_for(300, timeout=120)
    seen = Counter(m.peer_ip for m in got)
    assert set(seen) == set(ENDPOINT_IP.values()), seen
    assert_shares(seen, dict.fromkeys(ENDPOINT_IP.values(), 1))
    # interface and helo_data both came from the routes file
    assert all(m.helo == HELO[m.peer_ip] for m in got)
    assert deliveries(exim, "sb_direct", expected=300) == 300
    assert deliveries(exim, "plain") == 0


def test_drained_endpoint_gets_nothing_after_the_drain(exim: EximSystem) -> None:
    assert exim.send_many(60, threads=3, tag=lambda i: "before") == []
    exim.sink.wait_for(60, timeout=60)
    assert "127.0.0.3" in {m.peer_ip for m in exim.sink.messages}, "out2 took nothing before the drain"
    cli(exim, "drain", "out2", "--reason", "exim test")
    assert exim.send_many(150, threads=3, start=60, tag=lambda i: "after") == []
    got = exim.sink.wait_for(210, timeout=90)
    after = Counter(m.peer_ip for m in got if m.header("X-Test-Tag") == "after")
    assert sum(after.values()) == 150
    assert after["127.0.0.3"] == 0, after
    assert set(after) == {"127.0.0.2", "127.0.0.4"}, after


def test_policy_daemon_down_mail_leaves_by_the_default_interface(exim: EximSystem) -> None:
    exim.policyd.stop()
    assert exim.send_many(20, threads=2) == []
    got = exim.sink.wait_for(20, timeout=60)
    assert {m.peer_ip for m in got} == {DEFAULT_ROUTE_IP}
    assert {m.helo for m in got} == {"mta.test"}  # Exim's primary_hostname
    assert deliveries(exim, "plain", expected=20) == 20
    # and back: routing resumes when the daemon does
    exim.policyd.start()
    assert exim.send_many(20, threads=2, start=20) == []
    got = exim.sink.wait_for(40, timeout=60)
    assert {m.peer_ip for m in got[20:]} <= set(ENDPOINT_IP.values())


def test_relay_endpoint_goes_to_its_relay_from_its_address(exim: EximSystem) -> None:
    senders = lambda i: f"app{i}@relay.test"  # noqa: E731
    assert exim.send_many(10, threads=2, sender=senders) == []
    got = exim.relay_sink.wait_for(10, timeout=60)
    assert {m.peer_ip for m in got} == {RELAY_IP}
    assert {m.helo for m in got} == {"relay1.test"}
    assert exim.sink.messages == []  # not to the recipients' MX (the direct sink)
    assert deliveries(exim, "sb_relay", expected=10) == 10


def test_all_endpoints_drained_defers_at_data_and_loses_nothing(exim: EximSystem) -> None:
    for ep in ENDPOINT_IP:
        cli(exim, "drain", ep, "--reason", "exim test")
    with (
        smtplib.SMTP("127.0.0.1", exim.exim.smtp_port, timeout=30) as smtp,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        smtp.sendmail("shop@shop.test", ["someone@example1.test"], b"Subject: t\r\n\r\nhi\r\n")
    # the daemon's own text, as Postfix would show it: a temporary refusal, never a bounce
    assert refused.value.smtp_code == 451
    assert b"4.7.1 Egress capacity exhausted" in refused.value.smtp_error
    assert exim.exim.queue_size() == 0
    cli(exim, "undrain", "out1")
    assert exim.send_many(5, threads=1) == []
    got = exim.sink.wait_for(5, timeout=60)
    assert {m.peer_ip for m in got} == {"127.0.0.2"}
    wait_until(lambda: exim.exim.queue_size() == 0, timeout=30, what="Exim's queue to empty")


def test_a_request_over_the_daemons_limit_leaves_unrouted_not_rejected(exim: EximSystem) -> None:
    # 2,000 recipients make a `recipients=` attribute of about 74 KB: over the
    # daemon's 64 KiB request limit, so it closes the connection without an answer
    rcpts = [f"recipient-number-{i:04d}@example{i % 5}.test" for i in range(2000)]
    with smtplib.SMTP("127.0.0.1", exim.exim.smtp_port, timeout=60) as smtp:
        refused = smtp.sendmail("shop@shop.test", rcpts, b"Subject: many\r\n\r\nhi\r\n")
    assert refused == {}
    wait_until(
        lambda: sum(len(m.rcpt_tos) for m in exim.sink.messages) >= 2000, timeout=60, what="2,000 recipients"
    )
    assert {m.peer_ip for m in exim.sink.messages} == {DEFAULT_ROUTE_IP}
    assert "exceeds 65536 bytes" in exim.policyd.log_path.read_text()


def test_the_production_routers_parse_too(exim: EximSystem, tmp_path: Path) -> None:
    """Without SB_SMARTHOST the rendered sb_direct router is dnslookup: Exim accepts it."""
    production = EximInstance(
        tmp_path,
        exim.exim.smtp_port,
        exim.exim.rendered,
        exim.exim.sink_host,
        exim.exim.sink_port,
        smarthost=False,
    )
    production.write_config()
    production.check()
    routers = subprocess.run(
        [str(exim_binary()), "-C", str(production.config_file), "-bP", "router", "sb_direct"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "driver = dnslookup" in routers, routers


BULK = BULK_HEADERS


def test_exim_routes_by_message_class_over_smtp_and_local_submission(exim_system) -> None:
    """The milter's classification, for Exim: its ACL sends the few headers, the daemon classifies."""
    from integration.submit import build_message

    es = exim_system(CLASS_POOLS)
    kind = {0: "tx", 1: "bulk", 2: "explicit"}
    headers = {0: {}, 1: BULK, 2: {"X-Mail-Class": "bulk"}}  # explicit: from a trusted client
    assert es.send_many(60, threads=3, tag=lambda i: kind[i % 3], headers=lambda i: headers[i % 3]) == []
    for i in range(4):  # exim -bm: acl_not_smtp = sb_route_local
        msg = build_message(
            100 + i, "app@shop.test", [f"local{i}@example.test"], "local", BULK if i % 2 else {}
        )
        es.exim.submit_local("app@shop.test", [f"local{i}@example.test"], msg.as_bytes())
    got = es.sink.wait_for(64, timeout=120)
    tx_ip, bulk_ips = ENDPOINT_IP["out1"], {ENDPOINT_IP["out2"], ENDPOINT_IP["out3"]}
    for m in got:
        tag = m.header("X-Test-Tag")
        if tag == "local":
            expected = bulk_ips if int(m.header("X-Test-Seq")) % 2 else {tx_ip}
        else:
            expected = {tx_ip} if tag == "tx" else bulk_ips
        assert m.peer_ip in expected, (tag, m.header("X-Test-Seq"), m.peer_ip)
    lines = [line for line in es.policyd.log_path.read_text().splitlines() if "msg=decision" in line]
    assert any("message_class=bulk" in line for line in lines)
    assert any("message_class=transactional" in line for line in lines)
