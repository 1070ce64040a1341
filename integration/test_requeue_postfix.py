"""Moving queued mail off an ineligible route, on real Postfix (issue #16).

The sink throttles gmail.com on out2 for longer than each test lasts, so gmail
mail deferred on out2 could only leave by being moved. Postfix retries every
30 s here: "within one retry interval" is measured against that.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections import Counter

from integration.configs import ENDPOINT_IP
from integration.daemons import CLI
from integration.sink import Received
from integration.test_feedback_postfix import GMAIL_421
from integration.waits import wait_until

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com"]
RETRY_S = 30
SUSPENSION = "{sb}:suspend:out2:google"


def slow_retries(ms) -> None:
    """Retries every RETRY_S: a message that leaves sooner was moved, not retried."""
    pf = ms.postfix
    names = ("minimal_backoff_time", "maximal_backoff_time", "queue_run_delay")
    times = [f"{name}={RETRY_S}s" for name in names]
    subprocess.run(["postconf", "-c", str(pf.config_dir), "-e", *times], check=True)
    pf.reload()


NAME_OF = {ip: name for name, ip in ENDPOINT_IP.items()}


def day_key(ms, endpoint: str) -> str:
    """Today's day counter in the daemons' (test) clock: the CLI's status shows the same."""
    status = subprocess.run(
        [CLI, "-c", str(ms.config_path), "status"], capture_output=True, text=True, check=True
    ).stdout
    day = status.split(" at ", 1)[1][:10].replace("-", "")
    return f"{{sb}}:count:{endpoint}:day:{day}"


def requeue_metrics(ms) -> int:
    import yaml

    return int(yaml.safe_load(ms.config_path.read_text())["requeue"]["metrics_listen"].rpartition(":")[2])


def moved_total(ms) -> int:
    page = (
        urllib.request.urlopen(f"http://127.0.0.1:{requeue_metrics(ms)}/metrics", timeout=10).read().decode()
    )
    prefix = "smtp_balancer_requeue_moved_total{"
    return int(sum(float(line.split()[-1]) for line in page.splitlines() if line.startswith(prefix)))


def moved_lines(ms) -> list[str]:
    return [line for line in (ms.base / "requeue.log").read_text().splitlines() if "moved queue id" in line]


def per_recipient(messages: list[Received]) -> Counter[str]:
    return Counter(r for m in messages for r in m.rcpt_tos)


def deferred_on_out2(ms) -> int:
    log = ms.postfix.log_text()
    return sum("postfix/out2/smtp" in line and "status=deferred" in line for line in log.splitlines())


def test_throttled_gmail_mail_leaves_out2_at_once_and_yahoo_stays(mail_system) -> None:
    ms = mail_system(domains=DOMAINS, feedback=True, requeue=True)
    slow_retries(ms)
    out2 = ENDPOINT_IP["out2"]
    ms.sink.script(out2, "gmail.com", GMAIL_421)

    def alternate(i: int) -> list[str]:
        return [f"u{i}@{'gmail.com' if i % 2 == 0 else 'yahoo.com'}"]

    assert ms.send_many(60, threads=4, recipients=alternate, tag=lambda i: "p1") == []
    wait_until(lambda: ms.rdb.exists(SUSPENSION), 30, "the (out2, google) suspension")
    suspended_at = time.monotonic()
    gmail = {f"u{i}@gmail.com" for i in range(0, 60, 2)}
    yahoo = {f"u{i}@yahoo.com" for i in range(1, 60, 2)}
    # every gmail message arrives within one retry interval of the suspension
    wait_until(lambda: gmail <= set(per_recipient(ms.sink.messages)), RETRY_S, "every gmail message")
    took = time.monotonic() - suspended_at
    wait_until(lambda: yahoo <= set(per_recipient(ms.sink.messages)), 30, "every yahoo message")

    got = ms.sink.messages
    counts = per_recipient(got)
    assert all(counts[a] == 1 for a in gmail | yahoo), {a: n for a, n in counts.items() if n != 1}
    assert not [m for m in got if m.peer_ip == out2 and m.rcpt_tos[0].endswith("@gmail.com")]
    # info lines are buffered for up to a second: wait for the daemon's to be written
    moved_metric = wait_until(lambda: moved_total(ms), 10, "the moved metric")
    moved = wait_until(
        lambda: moved_lines(ms) if len(moved_lines(ms)) >= moved_metric else [], 10, "log lines"
    )
    assert len(moved) == moved_metric, moved
    assert all("from out2" in line and "google" in line for line in moved), moved
    assert deferred_on_out2(ms) >= len(moved)  # each moved message had been deferred on out2
    print(f"{len(moved)} messages moved; the last gmail message arrived {took:.1f}s after the suspension")

    # out2 keeps serving yahoo: new mail, and nothing for yahoo was moved
    assert ms.send_many(40, threads=4, recipients=lambda i: [f"n{i}@yahoo.com"], tag=lambda i: "p2") == []
    wait_until(lambda: len([m for m in ms.sink.messages if m.header("X-Test-Tag") == "p2"]) >= 40, 30, "p2")
    assert sum(m.peer_ip == out2 for m in ms.sink.messages if m.header("X-Test-Tag") == "p2") >= 5
    assert not any("yahoo" in line for line in moved)

    # each message counts once, on the route it left by: out2 gave back what moved
    wait_until(ms.postfix.queue_is_empty, 30, "an empty queue")
    counted = {ep: int(ms.rdb.hget(day_key(ms, ep), "total") or 0) for ep in ENDPOINT_IP}
    left_by = Counter(NAME_OF[m.peer_ip] for m in ms.sink.messages)
    assert counted == dict(left_by), (counted, left_by)

    # the moves are counted in the metric, and status shows queued mail per route
    page = (
        urllib.request.urlopen(f"http://127.0.0.1:{requeue_metrics(ms)}/metrics", timeout=10).read().decode()
    )
    moved_metric = sum(
        float(line.split()[-1])
        for line in page.splitlines()
        if line.startswith("smtp_balancer_requeue_moved_total{")
    )
    assert moved_metric == len(moved), page
    status = subprocess.run(
        [CLI, "-c", str(ms.config_path), "status"], capture_output=True, text=True, check=True
    ).stdout
    assert "queued (deferred messages bound to each endpoint, 1 host):\n  out1 0, out2 0, out3 0" in status, (
        status
    )
