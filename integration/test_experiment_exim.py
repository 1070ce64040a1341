"""The A/B experiment on real Exim 4.96: 240 messages through two arms, each
message's arm in its decision line, the outcomes per arm counted from Exim's
main log by its own feedback daemon exactly as the log has them."""

from __future__ import annotations

import re
import subprocess
from collections import Counter

from integration.arf import maildir_of_reports
from integration.configs import ENDPOINT_IP, even_experiment
from integration.daemons import CLI, wait_for_decision_lines
from integration.exim import exim_feedback
from integration.statistics import assert_shares
from integration.waits import wait_until

N = 240
# a delivery attempt through one of our transports ("retry time not reached" lines are none)
LINE = re.compile(r"^\S+ \S+ (\S+) (=>|==) \S+ .*\bT=sb_", re.M)
STATUS = {"=>": "sent", "==": "deferred"}
OUR_RECEIVED_ID = re.compile(rb"\(Exim [\d.]+\)[^;]*?\bid (\S+)")


def our_id(content: bytes) -> str:
    return OUR_RECEIVED_ID.search(content)[1].decode()


def test_two_arms_on_exim_with_outcomes_from_its_main_log(exim_system, tmp_path) -> None:
    es = exim_system(
        {
            "pools": {
                "main": {"endpoints": [{"endpoint": ep, "weight": 1} for ep in ENDPOINT_IP]},
                "solo1": {"endpoints": [{"endpoint": "out1", "weight": 1}]},
            },
            "feedback": {
                "start_at": "beginning",
                "poll_interval_ms": 100,
                "complaints": {"keep_dir": str(tmp_path / "kept")},
            },
            "experiments": [even_experiment("ab", "all", {"weights": "main", "solo1": "solo1"})],
        }
    )
    feedback, _ = exim_feedback(es.config_path, es.exim, es.base, "exim1")
    feedback.start()
    try:
        subprocess.run([CLI, "-c", str(es.config_path), "experiment", "start", "ab"], check=True)
        es.sink.script_share(ENDPOINT_IP["out2"], "gmail.com", "451 4.3.2 busy, try later", 1 / 3)
        assert es.send_many(N, threads=4, recipients=lambda i: [f"u{i}@gmail.com"]) == []
        lines = wait_for_decision_lines(es.base / "policyd.log", N)
        arm_of = {line["queue_id"]: line["arm"] for line in lines}
        assert_shares(Counter(arm_of.values()), {"weights": 0.5, "solo1": 0.5}, "arms")

        def from_log() -> Counter[tuple[str, str]]:
            found = LINE.findall(es.exim.log_text())
            return Counter((arm_of[q], STATUS[mark]) for q, mark in found if q in arm_of)

        def counted() -> Counter[tuple[str, str]]:
            out: Counter[tuple[str, str]] = Counter()
            for arm in ("weights", "solo1"):
                stats = es.rdb.hgetall(f"{{sb}}:expstats:ab:{arm}")
                for status in ("sent", "deferred"):
                    if int(stats.get(status, 0)):
                        out[(arm, status)] = int(stats[status])
            return out

        wait_until(
            lambda: sum(n for (_, s), n in from_log().items() if s == "sent") >= N, 120, "every delivery"
        )
        try:
            wait_until(lambda: from_log() == counted(), 60, "the arm counts to match Exim's log")
        except AssertionError as exc:
            raise AssertionError((from_log(), counted())) from exc
        assert from_log()[("weights", "deferred")] > 0 and from_log()[("solo1", "deferred")] == 0
        # log_selector +deliver_time: each delivery's DT= lands in a latency bucket
        for arm in ("weights", "solo1"):
            stats = es.rdb.hgetall(f"{{sb}}:expstats:ab:{arm}")
            latency = sum(int(n) for field, n in stats.items() if field.startswith("lat:"))
            assert latency == int(stats["sent"]) > 0, stats

        # complaints about 10 of solo1's messages name their arm by Exim's Received header
        solo1 = [m for m in es.sink.messages if arm_of[our_id(m.content)] == "solo1"]
        maildir = maildir_of_reports(tmp_path / "fbl", solo1[:10])
        fbl = subprocess.run(
            [CLI, "-c", str(es.config_path), "fbl", "--maildir", str(maildir)], capture_output=True, text=True
        )
        assert fbl.stdout.count("; experiment ab arm solo1") == 10, fbl.stdout + fbl.stderr
        assert es.rdb.hget("{sb}:expstats:ab:solo1", "complained") == "10"
        assert es.rdb.hget("{sb}:expstats:ab:weights", "complained") is None
    finally:
        feedback.stop()
