"""Relay health thresholds, and the probe against real sockets on loopback."""

from __future__ import annotations

import socket

from smtp_balancer.config.endpoints import EndpointConfig
from smtp_balancer.feedback.probe import RelayHealth, probe


def test_down_after_consecutive_failures_and_up_after_consecutive_successes() -> None:
    h = RelayHealth(fail_after=3, recover_after=2)
    assert [h.record(False), h.record(False), h.record(True), h.record(False), h.record(False)] == [None] * 5
    assert h.record(False) == "down" and not h.up
    assert h.record(True) is None
    assert h.record(False) is None
    assert h.record(True) is None
    assert h.record(True) == "up" and h.up


def test_probe_of_a_closed_port_fails_with_a_reason() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        ep = EndpointConfig(kind="relay", nexthop=f"127.0.0.1:{port}", bind_address="127.0.0.2")
        ok, detail = probe(ep, 2.0)
    assert not ok and "refused" in detail.lower()
