"""The feedback loop end to end: real Postfix, Redis, policy daemon, feedback daemon and sink.

Per-domain destinations (each recipient domain its own Postfix destination, as
in production) so that a 421 for gmail.com through out2 leaves yahoo.com
through out2 alone, in Postfix as in our Redis state.
"""

from __future__ import annotations

import re
import subprocess
import time

from integration.configs import ENDPOINT_IP
from integration.daemons import CLI
from integration.waits import MAIL_S, wait_until

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com"]
GMAIL_421 = (
    "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating\r\n"
    "421 4.7.28 from your IP address. To protect our users from spam, mail sent from your IP address "
    "has been temporarily rate limited. - gsmtp"
)
SUSPENSION = "{sb}:suspend:out2:google"


def quiet_and_caught_up(ms, quiet_s: float = 1.5) -> bool:
    """No new 421 in the log for quiet_s, and the daemon's saved position at the log's end."""
    before = ms.postfix.log_text().count("4.7.28")
    time.sleep(quiet_s)
    if ms.postfix.log_text().count("4.7.28") != before:
        return False
    saved = ms.rdb.get("{sb}:feedback:it:position")
    return saved is not None and int(saved.split()[1]) >= ms.postfix.log_file.stat().st_size


def tagged(ms, tag: str):
    return [m for m in ms.sink.messages if m.header("X-Test-Tag") == tag]


def test_gmail_throttle_moves_google_mail_off_the_ip_and_back(mail_system) -> None:
    ms = mail_system(domains=DOMAINS, feedback=True)
    out2 = ENDPOINT_IP["out2"]
    ms.sink.script(out2, "gmail.com", GMAIL_421)

    # phase 1: traffic until Gmail throttles out2
    def alternate(i: int) -> list[str]:
        return [f"u{i}@{'gmail.com' if i % 2 == 0 else 'yahoo.com'}"]

    assert ms.send_many(40, threads=4, recipients=alternate, tag=lambda i: "p1") == []
    seen_at = wait_until(
        lambda: "4.7.28" in ms.postfix.log_text() and time.monotonic(), 30, "the 421-4.7.28 log line"
    )
    wait_until(lambda: ms.rdb.exists(SUSPENSION), 5, "the (out2, google) suspension")
    assert time.monotonic() - seen_at <= 5.0
    reason = ms.rdb.get(SUSPENSION)
    assert "google-rate-limited" in reason and "4.7.28" in reason

    # phase 2: google mail avoids out2, other providers still use it
    assert ms.send_many(200, threads=4, recipients=alternate, tag=lambda i: "p2", start=1000) == []
    wait_until(lambda: len(tagged(ms, "p2")) >= 200, MAIL_S, "phase 2 deliveries")
    p2 = tagged(ms, "p2")
    gmail_ips = {m.peer_ip for m in p2 if m.rcpt_tos[0].endswith("@gmail.com")}
    yahoo_from_out2 = [m for m in p2 if m.rcpt_tos[0].endswith("@yahoo.com") and m.peer_ip == out2]
    assert out2 not in gmail_ips and gmail_ips, gmail_ips
    assert len(yahoo_from_out2) >= 25, len(yahoo_from_out2)  # about half of 100 at weight 2 of 4

    status = subprocess.run(
        [CLI, "-c", str(ms.config_path), "status"], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"^  out2 +google +\S+ +rule google-rate-limited", status, re.M), status
    listed = subprocess.run(  # the whole reason, not cut to fit a status row
        [CLI, "-c", str(ms.config_path), "list", "suspensions"], capture_output=True, text=True, check=True
    ).stdout
    assert "google-rate-limited" in listed and "4.7.28" in listed, listed

    # the provider lifts the throttle and the suspension's TTL runs out: out2 takes google mail again
    with ms.sink.handler.lock:
        ms.sink.handler.scripted.clear()
    # a 421 logged just before the throttle lifted but read after the TTL ran out would
    # rightly suspend out2 again: let the log go quiet and the daemon catch up first
    wait_until(lambda: quiet_and_caught_up(ms), 30, "the feedback daemon to catch up with the log")
    ms.rdb.expire(SUSPENSION, 1)
    wait_until(lambda: not ms.rdb.exists(SUSPENSION), 5, "the suspension to expire")
    assert (
        ms.send_many(100, threads=4, recipients=lambda i: [f"u{i}@gmail.com"], tag=lambda i: "p3", start=2000)
        == []
    )
    wait_until(lambda: len(tagged(ms, "p3")) >= 100, MAIL_S, "phase 3 deliveries")
    assert sum(m.peer_ip == out2 for m in tagged(ms, "p3")) >= 25

    # nothing lost: the gmail mail deferred on out2 before the suspension is delivered on retry
    wait_until(lambda: len(tagged(ms, "p1")) >= 40, MAIL_S, "the deferred phase 1 mail")
    assert ms.postfix.queue_is_empty() or wait_until(ms.postfix.queue_is_empty, MAIL_S, "an empty queue")
