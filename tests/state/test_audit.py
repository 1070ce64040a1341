"""The audit trail against a real redis-server: bounded, read back oldest first, and
hand-written entries shown, not fatal."""

from __future__ import annotations

from datetime import UTC, datetime

import redis

from smtp_balancer.clock import FixedClock

CLOCK = FixedClock(datetime(2026, 11, 24, 10, 30, tzinfo=UTC))


def test_the_audit_trail_is_bounded(redis_server, monkeypatch):
    from smtp_balancer.state import audit
    from smtp_balancer.state.keys import KeySchema

    monkeypatch.setattr(audit, "AUDIT_MAX", 50)
    raw = redis.Redis(unix_socket_path=str(redis_server.socket))  # bytes, as the CLI reads
    trail = audit.AuditTrail(raw, KeySchema(), CLOCK)
    for i in range(120):
        trail.record("weight", "main/out2", str(i), str(i + 1))
    assert raw.xlen("{sb}:audit") == 50
    kept = trail.read()
    assert [e.old for e in kept] == [str(i) for i in range(70, 120)]  # the newest, oldest first
    raw.xadd("{sb}:audit", {"junk": b"\xff"})  # hand-written: shown with empty fields
    assert trail.read()[-1].verb == ""
    raw.close()
