"""Replay on a real MTA's logs (issue #37), the checks Postfix and Exim share.

The run behind them: out3 warming under a day cap of 80, 5 of them for Google,
and Gmail refusing out2 with ``421 4.7.28`` from some point on. The real feedback
daemon suspended (out2, google) at ``real_suspension_at``; the MTA logged its first
421 at ``first_421_at`` (whole seconds). Each check replays the run's own logs with
``smtp-balancer replay --json`` under a candidate and compares what it says with
what the logs say, or with what follows from them without the replay's help.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from integration.configs import deep_merge
from integration.daemons import CLI, decision_lines
from integration.statistics import assert_shares

WARM_TOTAL, WARM_GOOGLE = 80, 5
LOWER_CAP = 4  # below Google's 5: no Google refusal can come before it is reached
NEW_RULE = "gmail-unsolicited-throttles"


def replay(config: Path, candidate: Path, decisions: Path, mta_log: Path, mta: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            CLI, "-c", str(config), "replay", "--candidate", str(candidate), "--mta", mta,
            "--decisions", str(decisions), "--mta-log", str(mta_log), "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def candidate(config: Path, folder: Path, name: str, change: dict[str, Any]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(config.read_text()), change)))
    return path


def log_time(line: str, mta: str) -> float:
    """An MTA log line's time, to its whole second, read here without replay's help."""
    if mta == "exim":
        return datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S").timestamp()
    return datetime.strptime(f"{datetime.now().year} {line[:15]}", "%Y %b %d %H:%M:%S").timestamp()


def check_replays(
    config: Path,
    decisions: Path,
    mta_log: Path,
    mta: str,
    folder: Path,
    real_suspension_at: float,
    first_421_at: float,
    messages: int,
) -> None:
    def run(candidate_path: Path) -> dict[str, Any]:
        return replay(config, candidate_path, decisions, mta_log, mta)

    # the same YAML: the log's shares, caps and suspension come back
    same = run(config)
    assert same["messages"] == messages
    actual = {f"{r['endpoint']}/{r['provider']}": r["actual"] for r in same["routes"] if r["actual"]}
    replayed = Counter({f"{r['endpoint']}/{r['provider']}": r["candidate"] for r in same["routes"]})
    assert_shares(replayed, actual)
    (suspension,) = [a for a in same["actions"]["candidate"] if a["rule"] == "google-rate-limited"]
    assert (suspension["endpoint"], suspension["provider"]) == ("out2", "google")
    print(f"{mta}: replayed suspension {suspension['epoch'] - real_suspension_at:+.3f}s from the real one")
    assert abs(suspension["epoch"] - real_suspension_at) <= 1.0, (suspension, real_suspension_at)
    caps = {(c["endpoint"], c["scope"]) for c in same["caps_reached"]["candidate"]}
    assert caps == {("out3", "google"), ("out3", "total")}
    out3 = {r["provider"]: (r["actual"], r["candidate"]) for r in same["routes"] if r["endpoint"] == "out3"}
    assert out3["google"] == (WARM_GOOGLE, WARM_GOOGLE)
    assert sum(a for a, _ in out3.values()) == sum(c for _, c in out3.values()) == WARM_TOTAL

    # new weights (out1:out2 at 3:1, out3 left out): the providers nobody throttled follow
    pools = {"main": {"endpoints": [{"endpoint": "out1", "weight": 3}, {"endpoint": "out2", "weight": 1}]}}
    moved = run(candidate(config, folder, "weights", {"pools": pools}))
    others: Counter[str] = Counter()
    for r in moved["routes"]:
        if r["provider"] != "google":
            others[r["endpoint"]] += r["candidate"]
    assert_shares(others, {"out1": 3, "out2": 1})  # and none on out3

    # a lower cap: until it is reached the candidate decides as the log did (same draws,
    # same state), so it is reached at the message the log sent through out3 next
    lower = run(
        candidate(config, folder, "lower", {"endpoints": {"out3": {"warmup": {"schedule": [LOWER_CAP]}}}})
    )
    in_order = sorted(decision_lines(decisions), key=lambda d: d["ts"])  # stable: the log's order
    through_out3 = [n for n, d in enumerate(in_order, 1) if d.get("endpoint") == "out3"]
    (total,) = [
        c for c in lower["caps_reached"]["candidate"] if (c["endpoint"], c["scope"]) == ("out3", "total")
    ]
    assert total["message"] == through_out3[LOWER_CAP], (total, through_out3[: LOWER_CAP + 1])
    assert sum(r["candidate"] for r in lower["routes"] if r["endpoint"] == "out3") == LOWER_CAP

    # a new response rule, ahead of the shipped ones: it acts on the reply the shipped
    # one acted on in the live replay, the log's first 421, and the shipped one never acts
    rule = {
        "name": NEW_RULE,
        "match": "unsolicited",
        "providers": ["google"],
        "statuses": ["deferred"],
        "action": "throttle",
        "factor": 0.5,
        "duration": 600,
    }
    ruled = run(candidate(config, folder, "rule", {"feedback": {"response_rules": [rule]}}))
    fired = [a for a in ruled["actions"]["candidate"] if a["rule"] == NEW_RULE]
    assert fired and (fired[0]["action"], fired[0]["endpoint"], fired[0]["provider"]) == (
        "throttle",
        "out2",
        "google",
    )
    live_suspension = next(a for a in ruled["actions"]["live_replayed"] if a["rule"] == "google-rate-limited")
    assert fired[0]["epoch"] == live_suspension["epoch"]
    assert first_421_at <= fired[0]["epoch"] < first_421_at + 1  # within the 421's logged second
    assert not [a for a in ruled["actions"]["candidate"] if a["rule"] == "google-rate-limited"]
    assert NEW_RULE not in ruled["response_rules_never_matched"]
