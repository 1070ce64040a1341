"""Adaptive weights through real Postfix: the sink defers 30% of out2's gmail mail.

out2's gmail share falls to its floor within 60 s while its yahoo share stays,
`explain` and the feedback daemon's metrics show the factor and its cause, and
the share comes back once the sink stops deferring. Nothing is lost.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections import Counter

import yaml

from integration.configs import ENDPOINT_IP
from integration.daemons import CLI
from integration.statistics import assert_binomial
from integration.waits import wait_until

OUT2 = ENDPOINT_IP["out2"]
KEY = "{sb}:adaptive:out2:google"
FLOOR = 0.1
DEFER = "451 4.3.2 Service busy, try again later"


def test_a_deferring_provider_shrinks_one_ips_share_to_the_floor_and_back(mail_system):
    ms = mail_system(
        {
            "pools": {"main": {"adaptive": True}},
            "adaptive": {"window": "1m", "interval": "2s", "min_attempts": 10, "floor": FLOOR},
        },
        domains=["gmail.com", "yahoo.com"],
        feedback=True,
    )
    feedback_metrics = yaml.safe_load(ms.config_path.read_text())["feedback"]["metrics_listen"]

    def alternate(i: int) -> list[str]:
        return [f"u{i}@{'gmail.com' if i % 2 == 0 else 'yahoo.com'}"]

    def tagged(tag: str) -> list:
        return [m for m in ms.sink.messages if m.header("X-Test-Tag") == tag]

    # phase 1: traffic while the sink defers 30% of out2's gmail mail
    ms.sink.script_share(OUT2, "gmail.com", DEFER, 0.3)
    started = time.monotonic()
    sent = 0
    while not ms.rdb.exists(KEY) or not ms.rdb.get(KEY).startswith(f"{FLOOR} "):
        assert time.monotonic() - started < 60, "out2's gmail factor did not reach its floor within 60 s"
        assert ms.send_many(40, threads=4, recipients=alternate, tag=lambda i: "p1", start=sent) == []
        sent += 40
    cause = ms.rdb.get(KEY).partition(" ")[2]
    assert cause.startswith("deferred ") and cause.endswith(" in 1m"), cause

    explained = subprocess.run(
        [CLI, "-c", str(ms.config_path), "explain", "--sender", "a@shop.test", "--rcpt", "bob@gmail.com"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"adaptive factor {FLOOR} (deferred" in explained, explained
    page = urllib.request.urlopen(f"http://{feedback_metrics}/metrics", timeout=5).read().decode()
    assert f'smtp_balancer_adaptive_factor{{endpoint="out2",provider="google"}} {FLOOR}' in page

    # phase 2: at the floor, out2 keeps 0.1 of its half of the gmail draws; yahoo keeps its half
    assert ms.send_many(1200, threads=4, recipients=alternate, tag=lambda i: "p2", start=10_000) == []
    assert ms.rdb.get(KEY).startswith(f"{FLOOR} "), "the factor left the floor while the sink still deferred"

    # phase 3: the sink stops deferring; traffic until the factor lifts
    ms.sink.clear_scripts()
    stopped = time.monotonic()
    batch = 20_000
    while ms.rdb.exists(KEY):
        assert time.monotonic() - stopped < 150, "the factor did not lift after the sink stopped deferring"
        assert ms.send_many(40, threads=4, recipients=alternate, tag=lambda i: "p3", start=batch) == []
        batch += 40
        time.sleep(1)
    assert ms.send_many(1200, threads=4, recipients=alternate, tag=lambda i: "p4", start=50_000) == []
    wait_until(
        lambda: (
            'smtp_balancer_adaptive_factor{endpoint="out2",provider="google"} 1.0'
            in urllib.request.urlopen(f"http://{feedback_metrics}/metrics", timeout=5).read().decode()
        ),
        30,
        "the gauge back at 1",
    )

    # nothing lost: deferred mail is delivered once the sink stops deferring
    ms.postfix.flush()
    wait_until(lambda: len(tagged("p2")) == len(tagged("p4")) == 1200, 120, "phases 2 and 4 delivered")
    for tag, gmail_share in (("p2", 0.5 * FLOOR), ("p4", 0.5)):
        got = tagged(tag)
        by = Counter((m.rcpt_tos[0].rpartition("@")[2], m.peer_ip == OUT2) for m in got)
        assert_binomial(by[("gmail.com", True)], 600, gmail_share)
        assert_binomial(by[("yahoo.com", True)], 600, 0.5)  # other providers keep out2's share
