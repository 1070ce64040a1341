"""DNSBL quarantine through a local DNS responder, and relay probes, with the real daemon and Redis."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.configs import deep_merge, topology
from integration.daemons import CLI, DaemonProcess, metric_sum, metrics_port, tcp_ready
from integration.redis_server import RedisServer
from integration.sink import Sink, free_port
from integration.waits import wait_until

ZONE = "bl.test"
LISTED_NAME = "4.0.0.127.bl.test"  # out3's public IP 127.0.0.4, reversed


@pytest.fixture
def feedback_daemon(tmp_path: Path, redis_server: RedisServer):
    procs: list[DaemonProcess] = []

    def start(extra: dict[str, Any]) -> DaemonProcess:
        port = free_port()
        log = tmp_path / "mail.log"
        log.touch()
        config = deep_merge(
            {
                "redis": {"url": redis_server.url},
                **topology(),
                "feedback": {"log_file": str(log), "instance": "t", "metrics_listen": f"127.0.0.1:{port}"},
            },
            extra,
        )
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        proc = DaemonProcess("feedback", path, tmp_path / "feedback.log", tcp_ready(port))
        proc.start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def state(rdb, endpoint: str) -> dict[str, str]:
    return rdb.hgetall(f"{{sb}}:endpoint:{endpoint}:state")


def test_dnsbl_listing_quarantines_and_delisting_restores(dns, feedback_daemon, rdb) -> None:
    proc = feedback_daemon(
        {
            "endpoints": {"out3": {"public_ip": "127.0.0.4"}},
            "feedback": {"dnsbl": {"zones": [{"zone": ZONE}], "nameservers": [dns.address], "interval": 1}},
        }
    )
    # a refusal code first: an error, never a quarantine
    dns.set(LISTED_NAME, ["127.255.255.254"])
    wait_until(lambda: dns.queries.count(LISTED_NAME) >= 2, 60, "two DNSBL rounds")
    assert state(rdb, "out3").get("state") in (None, "active")

    dns.set(LISTED_NAME, ["127.0.0.2"])
    wait_until(lambda: state(rdb, "out3").get("state") == "quarantined", 60, "the quarantine")
    st = state(rdb, "out3")
    assert ZONE in st["reason"] and "127.0.0.2" in st["reason"] and st["by"] == "dnsbl"
    status = subprocess.run(
        [CLI, "-c", str(proc.config_path), "status"], capture_output=True, text=True, check=True
    ).stdout
    assert ZONE in status, status

    dns.set(LISTED_NAME, None)
    wait_until(lambda: state(rdb, "out3").get("state") == "active", 60, "the delisting")


def test_dnsbl_never_lifts_an_operator_drain(dns, feedback_daemon, rdb) -> None:
    rdb.hset("{sb}:endpoint:out3:state", mapping={"state": "drained", "reason": "maintenance", "by": "cli"})
    dns.set(LISTED_NAME, ["127.0.0.2"])
    feedback_daemon(
        {
            "endpoints": {"out3": {"public_ip": "127.0.0.4"}},
            "feedback": {"dnsbl": {"zones": [{"zone": ZONE}], "nameservers": [dns.address], "interval": 1}},
        }
    )
    wait_until(lambda: dns.queries.count(LISTED_NAME) >= 2, 60, "two DNSBL rounds")
    assert state(rdb, "out3")["state"] == "drained"


def explain(config_path: Path) -> tuple[bool, str]:
    """(is relay1 eligible, the pick line) from a dry-run decision."""
    out = subprocess.run(
        [CLI, "-c", str(config_path), "explain", "--rcpt", "a@gmail.com"], capture_output=True, text=True
    ).stdout
    row = next(line.split() for line in out.splitlines() if line.split()[1:2] == ["relay1"])
    return row[3] == "yes", next(line for line in out.splitlines() if line.startswith("pick:"))


def test_relay_marked_down_on_a_closed_port_and_back_up_when_it_reopens(feedback_daemon, rdb) -> None:
    relay = Sink()
    relay.start()
    try:
        proc = feedback_daemon(
            {
                "endpoints": {
                    "relay1": {
                        "kind": "relay",
                        "nexthop": f"127.0.0.1:{relay.port}",
                        "bind_address": "127.0.0.5",
                    }
                },
                "pools": {
                    "main": {"endpoints": [{"endpoint": "out1"}, {"endpoint": "relay1", "weight": 100}]}
                },
                "feedback": {
                    "probes": {"interval": 1, "fail_after": 2, "recover_after": 2, "timeout_ms": 1000}
                },
            }
        )
        # three passed probes (fail_after is 2) and the relay still counts as up
        port = metrics_port(proc.config_path, "feedback")
        passed = 'smtp_balancer_relay_probes_total{endpoint="relay1",result="ok"} '
        wait_until(lambda: metric_sum(port, passed) >= 3, 60, "three passed relay probes")
        assert state(rdb, "relay1").get("state") in (None, "active")
        assert explain(proc.config_path)[0]
        relay.stop()
        wait_until(lambda: state(rdb, "relay1").get("state") == "quarantined", 60, "relay marked down")
        assert state(rdb, "relay1")["by"] == "relay-probe"
        eligible, chosen = explain(proc.config_path)
        assert not eligible and "out1" in chosen  # traffic moved
        relay = Sink(port=relay.port)
        relay.start()
        wait_until(lambda: state(rdb, "relay1").get("state") == "active", 60, "relay marked up")
        assert explain(proc.config_path)[0]
    finally:
        relay.stop()
