"""A frozen policy daemon spends no quota on requests its MTA gave up on (issue #15).

policyd is stopped (SIGSTOP) for 15 s in the middle of a run, longer than the
MTA waits for it (Postfix: policyd.postfix_timeout_s, 10 s; Exim: the readsocket
timeout, 2 s). The MTA routes those messages by its default transport. When the
daemon resumes it reads the requests that queued up meanwhile; it must not
decide the ones whose client already left, or the warming endpoint's counter
would run ahead of what it delivered. Afterwards the counter equals the mail
delivered through it, and nothing is lost.

One unit may be counted for mail that left by default: that of the decision the
daemon was making at the instant it was stopped, its unit taken and its answer not
yet written. The MTA acknowledges no answer, so no daemon can close that window;
policyd keeps it to one step of its event loop (it writes an answer, and shuts
Exim's connection, in the step that decides it). A CI run found it: the decision
logged last before the stop, for a message Exim then sent by default 2 s later.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

from integration.configs import ENDPOINT_IP
from integration.daemons import decision_lines
from integration.sink import Received
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


def run_with_a_freeze(system, threads: int) -> list[Received]:
    """TOTAL messages with policyd frozen mid-run; every message, once all arrived."""
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
    return system.sink.wait_for(TOTAL, timeout=180)  # nothing lost


def queue_id_of(message: Received) -> str:
    """The MTA's queue id, from the Received header it added (the top one)."""
    found = re.search(r"\bid ([0-9A-Za-z-]+)", message.header("Received") or "")
    assert found, message.headers
    return found.group(1)


def assert_counted_as_delivered(system, got: list[Received]) -> None:
    """out3's counter equals its deliveries, plus at most the one unit of the decision
    in flight when the daemon was stopped (see the module's docstring), named by its
    queue id: an out3 decision for a message that left by another route. A daemon that
    decided the requests its MTA abandoned during the freeze (dozens) strands many."""
    system.policyd.stop()  # its last decision lines are written at exit
    out3_ip = ENDPOINT_IP["out3"]
    left_by = {queue_id_of(m): m.peer_ip for m in got}
    assert len(left_by) == TOTAL
    decided = [line for line in decision_lines(system.policyd.log_path) if line.get("endpoint") == "out3"]
    stranded = [line["queue_id"] for line in decided if left_by[line["queue_id"]] != out3_ip]
    assert len(stranded) <= 1, f"out3 decisions for mail that left by another route: {stranded}"
    delivered = sum(ip == out3_ip for ip in left_by.values())
    # stopped already: leased units were given back at exit
    assert_counted_exactly(system.rdb, ["out3"], delivered + len(stranded), [system.policyd])


def test_postfix_policyd_frozen_15s_counts_only_what_out3_delivered(mail_system):
    ms = mail_system(warming_out3())
    got = run_with_a_freeze(ms, threads=8)
    # the freeze really outlasted Postfix's wait: some mail went by default
    assert any(m.peer_ip not in ENDPOINT_IP.values() for m in got)
    abandoned = ms.metric('smtp_balancer_policy_abandoned_total{mta="postfix"}')
    assert abandoned > 0  # requests Postfix gave up on were read, and not decided
    assert_counted_as_delivered(ms, got)


def test_exim_policyd_frozen_15s_counts_only_what_out3_delivered(exim_system):
    es = exim_system(warming_out3())  # exim.readsocket_timeout_s: 2 s (default)
    got = run_with_a_freeze(es, threads=6)
    # the freeze outlasted Exim's wait: some mail left by the default interface
    assert any(m.peer_ip not in ENDPOINT_IP.values() for m in got)
    assert_counted_as_delivered(es, got)
    text = es.policyd.log_path.read_text()
    assert "not deciding for queue id" in text and "Exim sent it" in text


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
