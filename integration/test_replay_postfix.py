"""Replay on real Postfix logs (issue #37): a run with a warming endpoint and a
Gmail throttle, replayed from the policy daemon's and Postfix's own logs.

- Under the same YAML, each (endpoint, provider)'s volume matches the actual one
  (chi-square against the actual counts, false-failure rate below 1e-7), and the
  replay suspends (out2, google) by the same rule within 1 s of the real
  feedback daemon.
- Under new weights (out1:out2 at 3:1, out3 left out), the mail of the providers
  nobody throttled follows them.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from datetime import UTC, datetime

import yaml

from integration.configs import ENDPOINT_IP
from integration.daemons import CLI, wait_for_decision_lines
from integration.statistics import assert_shares
from integration.waits import MAIL_S, wait_until
from smtp_balancer.clock import TEST_TIME_ENV

DOMAINS = ["gmail.com", "yahoo.com", "outlook.com"]
GMAIL_421 = (
    "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating\r\n"
    "421 4.7.28 from your IP address. - gsmtp"
)
N1, N2 = 600, 900  # before Gmail throttles out2, and after
ACTED = re.compile(
    r"^ts=(\S+) .*msg=\"suspend_provider out2 for google for \d+s \(rule google-rate-limited", re.M
)


def replay(config_path, candidate, ms, tmp_path) -> dict:
    out = subprocess.run(
        [
            CLI, "-c", str(config_path), "replay", "--candidate", str(candidate),
            "--decisions", str(ms.policyd.log_path), "--mta-log", str(ms.postfix.log_file), "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_replaying_a_postfix_run_with_a_throttle_and_a_warming_ip(mail_system, tmp_path):
    # the real clock for the daemons: their log lines carry the real time, which the
    # replay's simulated clock follows, so the warm-up's day is the same for both
    today = datetime.now(UTC).date().isoformat()
    # Google's 5 are reached before the total: out3 takes a third of its 80 draws
    # from gmail.com mail, and fewer than 5 has a probability below 1e-8
    warm = {"start": today, "schedule": [80], "providers": {"google": [5]}}
    real_clock = {TEST_TIME_ENV: ""}
    ms = mail_system(
        {"endpoints": {"out3": {"warmup": warm}}},
        domains=DOMAINS,
        feedback=True,
        env={"policyd": real_clock, "feedback": real_clock},
    )
    rcpt = lambda i: [f"u{i}@{DOMAINS[i % 3]}"]  # noqa: E731
    assert ms.send_many(N1, threads=4, recipients=rcpt) == []
    ms.sink.wait_for(N1, timeout=MAIL_S)
    ms.sink.script(ENDPOINT_IP["out2"], "gmail.com", GMAIL_421)
    assert ms.send_many(N2, threads=4, recipients=rcpt, start=N1) == []
    acted = wait_until(lambda: ACTED.search(ms.feedback.log_path.read_text()), 60, "the real suspension")
    actual_at = datetime.fromisoformat(acted.group(1)).timestamp()
    wait_for_decision_lines(ms.policyd.log_path, N1 + N2)
    wait_until(
        lambda: ms.postfix.log_text().count("status=") >= N1 + N2, MAIL_S, "every first attempt logged"
    )

    same = replay(ms.config_path, ms.config_path, ms, tmp_path)
    assert same["messages"] == N1 + N2
    actual = {(r["endpoint"], r["provider"]): r["actual"] for r in same["routes"] if r["actual"]}
    replayed = Counter({(r["endpoint"], r["provider"]): r["candidate"] for r in same["routes"]})
    assert_shares(
        {f"{e}/{p}": n for (e, p), n in replayed.items()}, {f"{e}/{p}": n for (e, p), n in actual.items()}
    )
    (suspension,) = [a for a in same["actions"]["candidate"] if a["rule"] == "google-rate-limited"]
    assert (suspension["endpoint"], suspension["provider"]) == ("out2", "google")
    print(f"replayed suspension {suspension['epoch'] - actual_at:+.3f}s from the real one")
    assert abs(suspension["epoch"] - actual_at) <= 1.0, (suspension, actual_at)
    caps = {(c["endpoint"], c["scope"]) for c in same["caps_reached"]["candidate"]}
    assert caps == {("out3", "google"), ("out3", "total")}
    out3 = {r["provider"]: (r["actual"], r["candidate"]) for r in same["routes"] if r["endpoint"] == "out3"}
    assert (
        out3["google"] == (5, 5)
        and sum(a for a, _ in out3.values()) == sum(c for _, c in out3.values()) == 80
    )

    candidate = {**yaml.safe_load(ms.config_path.read_text())}
    candidate["pools"] = {
        "main": {"endpoints": [{"endpoint": "out1", "weight": 3}, {"endpoint": "out2", "weight": 1}]}
    }
    (tmp_path / "candidate.yaml").write_text(yaml.safe_dump(candidate))
    moved = replay(ms.config_path, tmp_path / "candidate.yaml", ms, tmp_path)
    others = Counter()
    for r in moved["routes"]:
        if r["provider"] != "google":
            others[r["endpoint"]] += r["candidate"]
    assert_shares(others, {"out1": 3, "out2": 1})  # and none on out3, which it left out
