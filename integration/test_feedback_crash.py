"""The feedback daemon SIGKILLed mid-run (issue #14): every delivery counted exactly once.

2,000 messages go through real Postfix while the feedback daemon is killed
twice and restarted. Each batch's counts and the log position are written in
one MULTI/EXEC, so a restarted daemon resumes where the last applied batch
ended: the 2,000 deliveries are in the Redis outcome counters exactly once. A
throttle that arrives after the restarts still suspends the endpoint.
"""

from __future__ import annotations

import threading

from integration.configs import ENDPOINT_IP
from integration.test_feedback_postfix import DOMAINS, GMAIL_421, SUSPENSION, quiet_and_caught_up
from integration.waits import wait_until

TOTAL = 2000


def counted(ms, status: str) -> int:
    return sum(int(ms.rdb.hget(key, status) or 0) for key in ms.rdb.scan_iter("{sb}:outcomes:*", count=1000))


def test_sigkill_twice_during_2000_deliveries_counts_each_once(mail_system):
    ms = mail_system(domains=DOMAINS, feedback=True)
    errors: list[str] = []
    sender = threading.Thread(
        target=lambda: errors.extend(
            ms.send_many(TOTAL, threads=4, recipients=lambda i: [f"u{i}@{DOMAINS[i % 3]}"])
        )
    )
    sender.start()
    try:
        for at in (500, 1200):
            wait_until(lambda at=at: len(ms.sink.messages) >= at, 180, f"{at} deliveries")
            ms.feedback.kill()  # SIGKILL: no goodbye, a batch may be half read
            ms.feedback.start()
    finally:
        sender.join(timeout=300)
    assert errors == []
    ms.sink.wait_for(TOTAL, timeout=180)
    wait_until(lambda: quiet_and_caught_up(ms), 60, "the feedback daemon to reach the end of the log")
    assert counted(ms, "sent") == TOTAL  # not one lost, not one twice
    assert "status=sent" in ms.postfix.log_text()

    # a throttle after the restarts still suspends (out2, google)
    ms.sink.script(ENDPOINT_IP["out2"], "gmail.com", GMAIL_421)
    assert ms.send_many(40, threads=4, recipients=lambda i: [f"v{i}@gmail.com"], start=TOTAL) == []
    wait_until(lambda: ms.rdb.exists(SUSPENSION), 60, "the (out2, google) suspension")
    assert "google-rate-limited" in ms.rdb.get(SUSPENSION)
