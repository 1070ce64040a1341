"""Redis Sentinel failover under load (issue #14), on loopback with real processes.

One master, one replica, three sentinels; the policy daemon and the feedback
daemon find the master through the sentinels. The master is SIGKILLed while
2,000 messages go through real Postfix. No message may be lost or rejected:
decisions degrade during the failover and the daemons follow the new master
within 10 s of the promotion. The warming out3's day cap is measured across the
failover: units counted on the old master but not yet replicated are lost with
it, so the cap can overshoot by what the replica had not received.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import redis

from integration.configs import ENDPOINT_IP
from integration.daemons import decision_lines
from integration.sentinel import SERVICE, SentinelSet
from integration.waits import MAIL_S, wait_until
from smtp_balancer.clock import utc_now

TOTAL = 2000
CAP = 300
KILL_AT = 600
FOLLOW_S = 10.0


def ts(line: dict[str, str]) -> float:
    return datetime.fromisoformat(line["ts"]).timestamp()


def test_master_killed_during_2000_messages(mail_system, tmp_path):
    sentinels = SentinelSet(tmp_path / "sentinel")
    try:
        sentinels.start()
        day = utc_now().date()
        ms = mail_system(
            {
                "redis": {"sentinel": {"hosts": sentinels.hosts, "service_name": SERVICE}},
                "endpoints": {"out3": {"warmup": {"start": day.isoformat(), "schedule": [CAP]}}},
            },
            feedback=True,
        )
        errors: list[str] = []
        sender = threading.Thread(target=lambda: errors.extend(ms.send_many(TOTAL, threads=2)))
        sender.start()
        try:
            wait_until(lambda: len(ms.sink.messages) >= KILL_AT, 180, f"{KILL_AT} deliveries")
            old = sentinels.master.client()
            counted_before_kill = int(old.hget(f"{{sb}}:count:out3:day:{day:%Y%m%d}", "total") or 0)
            killed_at = time.time()
            sentinels.kill_master()
            sentinels.wait_failover()
            failed_over_at = time.time()  # every sentinel names the new master (0.1 s polls)
        finally:
            sender.join(timeout=300)

        # 0 rejected, 0 lost
        assert errors == []
        ms.sink.wait_for(TOTAL, timeout=180)
        assert ms.postfix.queue_is_empty() or wait_until(ms.postfix.queue_is_empty, MAIL_S, "an empty queue")

        # the policy daemon follows the new master: decisions after the kill are
        # degraded only until it has reconnected, within FOLLOW_S of the promotion (how
        # long Sentinel takes to promote is Sentinel's: a split election retries after
        # twice failover-timeout)
        def followed() -> float | None:
            lines = [d for d in decision_lines(ms.policyd.log_path) if ts(d) > killed_at]
            first_good = next((ts(d) for d in lines if d["degraded"] == "false"), None)
            return first_good - killed_at if first_good is not None else None

        seq = TOTAL
        deadline = failed_over_at + FOLLOW_S
        while followed() is None and time.time() < deadline:  # top up if the run ended first
            assert ms.send_many(10, start=seq) == []
            seq += 10
        follow_s = followed()
        assert follow_s is not None and follow_s <= failed_over_at - killed_at + FOLLOW_S, follow_s
        late_degraded = [
            d
            for d in decision_lines(ms.policyd.log_path)
            if ts(d) > failed_over_at + FOLLOW_S and d["degraded"] == "true"
        ]
        assert late_degraded == []

        # the feedback daemon follows too: it counts on the new master
        new = redis.Redis("127.0.0.1", sentinels.replica_port, decode_responses=True)
        assert new.execute_command("ROLE")[0] == "master"
        wait_until(
            lambda: new.get("{sb}:feedback:it:position"), 30, "the feedback position on the new master"
        )

        # every message sent is delivered before anything is compared, top-ups too: a
        # count taken while the last top-up was still on its way made outcomes counted
        # later look like double counts (2010 counted for 2002 delivered)
        ms.sink.wait_for(seq, timeout=MAIL_S)
        wait_until(ms.postfix.queue_is_empty, MAIL_S, "an empty queue after the top-ups")
        # the warm-up cap across the failover: measured, and bounded by what was in flight
        out3_delivered = sum(m.peer_ip == ENDPOINT_IP["out3"] for m in ms.sink.messages)
        counted_after = int(new.hget(f"{{sb}}:count:out3:day:{day:%Y%m%d}", "total") or 0)
        delivered = len(ms.sink.messages)
        assert delivered == seq  # one delivery per message: each has one recipient
        wait_until(
            lambda: (
                sum(int(new.hget(k, "sent") or 0) for k in new.scan_iter("{sb}:outcomes:*")) >= delivered - 50
            ),
            60,
            "the feedback daemon to count on the new master",
        )
        # the feedback daemon has read the whole log (an event, not a guessed pause)
        log_size = ms.postfix.log_file.stat().st_size

        def read_offset() -> int:
            return int((new.get("{sb}:feedback:it:position") or "0 0").split(" ")[1])

        wait_until(lambda: read_offset() >= log_size, 60, "the feedback daemon at the end of the log")
        outcomes_sent = sum(int(new.hget(k, "sent") or 0) for k in new.scan_iter("{sb}:outcomes:*"))
        figures = {
            "delivered": delivered,
            "outcomes_sent_counted": outcomes_sent,
            "cap": CAP,
            "out3_delivered": out3_delivered,
            "overshoot": max(0, out3_delivered - CAP),
            "counted_on_old_master_at_kill": counted_before_kill,
            "counted_on_new_master_at_end": counted_after,
            "failover_s": round(failed_over_at - killed_at, 1),
            "first_good_decision_after_kill_s": round(follow_s, 1),
        }
        print("sentinel failover:", json.dumps(figures))
        (tmp_path.parent / "sentinel-figures.json").write_text(json.dumps(figures))
        assert counted_after <= CAP  # the new master itself never grants past the cap
        # overshoot is what the replica had not received at the kill: on loopback well
        # under a millisecond of writes (0 in every run so far); 10 units would take
        # ~0.4 s of lag at this run's rate of out3 decisions
        assert out3_delivered <= CAP + 10, figures
        # exactly once across the failover: batches the old master applied and the replica
        # never received are read again from the position the new master has
        assert outcomes_sent == delivered, figures
    finally:
        sentinels.stop()
