"""A frozen policy daemon spends no quota on requests its MTA gave up on (issue #15).

policyd is stopped (SIGSTOP) for 15 s in the middle of a run, longer than the
MTA waits for it (Postfix: policyd.postfix_timeout_s, 10 s; Exim: the readsocket
timeout, 2 s). The MTA routes those messages by its default transport. When the
daemon resumes it reads the requests that queued up meanwhile; it must not
decide the ones whose client already left, or the warming endpoint's counter
would run ahead of what it delivered. Afterwards the counter equals the mail
delivered through it, and nothing is lost.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from integration.configs import ENDPOINT_IP
from integration.waits import wait_until
from integration.workloads import assert_counted_exactly
from smtp_balancer.clock import utc_now

FREEZE_S = 15
TOTAL = 300


def warming_out3() -> dict:
    # a cap far above this run: the counter must equal out3's deliveries, not a cap;
    # the rendered defaults (timeout 3 s, try_limit 2): the freeze outlasts both tries
    return {
        "endpoints": {"out3": {"warmup": {"start": utc_now().date().isoformat(), "schedule": [100_000]}}},
        "policyd": {"postfix_timeout_s": 3, "postfix_try_limit": 2},
    }


def freeze(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def run_with_a_freeze(system, threads: int) -> tuple[int, int]:
    """TOTAL messages with policyd frozen mid-run; (out3 deliveries, unrouted deliveries),
    once every message arrived."""
    errors: list[str] = []
    sender = threading.Thread(target=lambda: errors.extend(system.send_many(TOTAL, threads=threads)))
    sender.start()
    try:
        wait_until(lambda: len(system.sink.messages) >= 60, 120, "60 deliveries before the freeze")
        assert system.policyd.proc is not None
        freeze(system.policyd.proc.pid, FREEZE_S)
    finally:
        sender.join(timeout=300)
    assert errors == []
    got = system.sink.wait_for(TOTAL, timeout=180)  # nothing lost
    out3 = sum(m.peer_ip == ENDPOINT_IP["out3"] for m in got)
    return out3, sum(m.peer_ip not in ENDPOINT_IP.values() for m in got)


def test_postfix_policyd_frozen_15s_counts_only_what_out3_delivered(mail_system):
    ms = mail_system(warming_out3())
    out3, unrouted = run_with_a_freeze(ms, threads=8)
    assert unrouted > 0  # the freeze really outlasted Postfix's wait: some mail went by default
    abandoned = ms.metric('smtp_balancer_policy_abandoned_total{mta="postfix"}')
    assert abandoned > 0  # requests Postfix gave up on were read, and not decided
    # a running daemon holds leased units; at exit it gives them back
    assert_counted_exactly(ms.rdb, ["out3"], out3, [ms.policyd])


def test_exim_policyd_frozen_15s_counts_only_what_out3_delivered(exim_system):
    es = exim_system(warming_out3())  # exim.readsocket_timeout_s: 2 s (default)
    out3, unrouted = run_with_a_freeze(es, threads=6)
    assert unrouted > 0  # the freeze outlasted Exim's wait: some mail left by the default interface
    text = es.policyd.log_path.read_text()
    assert "not deciding for queue id" in text and "Exim sent it" in text
    assert_counted_exactly(es.rdb, ["out3"], out3, [es.policyd])  # leased units go back at exit


def test_postfix_routes_again_at_once_after_a_freeze(mail_system):
    """With the rendered try_limit=2, Postfix drops a timed-out policy connection before
    its retry; with try_limit=1 it kept it, broken, for the rest of the SMTP session."""
    ms = mail_system({"policyd": {"postfix_timeout_s": 3, "postfix_try_limit": 2}})
    sender = threading.Thread(target=lambda: ms.send_many(120, threads=8))
    sender.start()
    try:
        wait_until(lambda: len(ms.sink.messages) >= 30, 120, "30 deliveries before the freeze")
        assert ms.policyd.proc is not None
        freeze(ms.policyd.proc.pid, 12)
    finally:
        sender.join(timeout=300)
    ms.sink.wait_for(120, timeout=120)
    # the same eight persistent sessions carry on, as an application's would
    assert ms.send_many(200, threads=8, start=1000, tag=lambda i: "after") == []
    after = [m for m in ms.sink.wait_for(320, timeout=120) if m.header("X-Test-Tag") == "after"]
    assert len(after) == 200
    assert [m.peer_ip for m in after if m.peer_ip not in ENDPOINT_IP.values()] == []
