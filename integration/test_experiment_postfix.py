"""An A/B experiment through real Postfix: two arms over 1,200 messages, each
message's arm in its decision line, and the outcomes per arm counted exactly as
the Postfix log has them."""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from datetime import UTC, datetime

from integration.arf import maildir_of_reports
from integration.configs import ENDPOINT_IP, even_experiment
from integration.daemons import CLI, wait_for_decision_lines
from integration.fixtures import arm_record_of
from integration.statistics import assert_shares
from integration.waits import MAIL_S, wait_until
from smtp_balancer.clock import TEST_TIME_ENV

N = 1200
OUR_RECEIVED_ID = re.compile(rb"\(Postfix\) with E?SMTP id (\w+)")
DELIVERY = re.compile(r"postfix/\w+/smtp\[\d+\]: (\w+): to=<[^>]+>.*status=(sent|deferred)")


def test_two_arms_with_outcomes_counted_from_the_postfix_log(mail_system, tmp_path):
    ms = mail_system(
        {
            "pools": {"solo1": {"endpoints": [{"endpoint": "out1", "weight": 1}]}},
            "experiments": [even_experiment("ab", "all", {"weights": "main", "solo1": "solo1"})],
            "feedback": {"complaints": {"keep_dir": str(tmp_path / "kept")}},
        },
        domains=["gmail.com"],
        feedback=True,
    )
    cli = [CLI, "-c", str(ms.config_path), "experiment"]
    subprocess.run([*cli, "start", "ab"], check=True, capture_output=True)
    wait_until(lambda: ms.rdb.hget("{sb}:experiment:ab", "state") == "running", 60, "the start")
    # the sink defers a third of out2's mail: the "weights" arm (out2 half its share) defers more
    ms.sink.script_share(ENDPOINT_IP["out2"], "gmail.com", "451 4.3.2 busy, try later", 1 / 3)
    assert ms.send_many(N, threads=4, recipients=lambda i: [f"u{i}@gmail.com"]) == []
    ms.sink.wait_for(N, timeout=240)

    lines = wait_for_decision_lines(ms.base / "policyd.log", N)
    arm_of = {line["queue_id"]: line["arm"] for line in lines}
    # each message is decided once, under a queue ID no other message has (long queue IDs)
    assert len(arm_of) == len(lines) == N, Counter(line["queue_id"] for line in lines).most_common(2)
    assert_shares(Counter(arm_of.values()), {"weights": 0.5, "solo1": 0.5}, "arms")
    assert {line["endpoint"] for line in lines if line["arm"] == "solo1"} == {"out1"}

    def from_log() -> Counter[tuple[str, str]]:
        return Counter(
            (arm_of[q], status) for q, status in DELIVERY.findall(ms.postfix.log_text()) if q in arm_of
        )

    def counted() -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for arm in ("weights", "solo1"):
            stats = ms.rdb.hgetall(f"{{sb}}:expstats:ab:{arm}")
            for status in ("sent", "deferred"):
                out[(arm, status)] = int(stats.get(status, 0))
        return out

    def decided() -> dict[str, int]:
        raw = {arm: ms.rdb.hget(f"{{sb}}:expstats:ab:{arm}", "decided") for arm in ("weights", "solo1")}
        return {arm: int(n) for arm, n in raw.items() if n is not None}

    # the feedback daemon has read the whole log when its counts match the log's
    try:
        wait_until(lambda: from_log() == counted(), MAIL_S, "the arm counts to match the Postfix log")
    except AssertionError as exc:
        raise AssertionError((from_log(), counted())) from exc
    expected = from_log()
    assert expected[("weights", "deferred")] > 0 and expected[("solo1", "deferred")] == 0
    assert expected[("weights", "sent")] + expected[("solo1", "sent")] == N
    # the deciders write these counts in batches: up to 5 s after a quiet host's last decision
    want = dict(Counter(arm_of.values()))
    wait_until(lambda: decided() == want, 60, f"the arms' decisions counted: {want}")

    # spam complaints about 24 of the weights arm's messages and 4 of solo1's, as a
    # feedback loop sends them: each names its message only by our Received header
    by_arm: dict[str, list] = {"weights": [], "solo1": []}
    for message in ms.sink.messages:
        by_arm[arm_of[OUR_RECEIVED_ID.search(message.content)[1].decode()]].append(message)
    maildir = maildir_of_reports(tmp_path / "fbl", by_arm["weights"][:24] + by_arm["solo1"][:4])
    fbl = subprocess.run(
        [CLI, "-c", str(ms.config_path), "fbl", "--maildir", str(maildir)], capture_output=True, text=True
    )
    assert fbl.returncode == 0 and fbl.stdout.count("; experiment ab arm ") == 28, fbl.stdout + fbl.stderr
    complained = {arm: ms.rdb.hget(f"{{sb}}:expstats:ab:{arm}", "complained") for arm in ("weights", "solo1")}
    assert complained == {"weights": "24", "solo1": "4"}

    report = subprocess.run([*cli, "report", "ab"], capture_output=True, text=True, check=True).stdout
    assert "solo1 defers less than weights" in report, report
    assert "p = " in report and "messages per arm" in report
    sent = {arm: expected[(arm, "sent")] for arm in ("weights", "solo1")}
    rates = f"{400 / sent['solo1']:.2f}% against {2400 / sent['weights']:.2f}%, p = "
    assert f"solo1 draws fewer complaints than weights: {rates}" in report, report

    # a new run: the earlier run's messages count no more, neither their late complaints
    # nor their deliveries. The CLI's clock is set just after the last decision, by the
    # deciders' clock (read from the arm records: log lines carry the host's real time).
    def decided_at(queue_ids) -> list[int]:
        return [int((arm_record_of(ms.rdb, q) or "").split(" ")[2]) for q in queue_ids]

    since = max(decided_at(arm_of)) + 2
    env = {**os.environ, TEST_TIME_ENV: datetime.fromtimestamp(since, UTC).isoformat()}
    subprocess.run([*cli, "start", "ab", "--reset"], check=True, capture_output=True, env=env)
    late = maildir_of_reports(tmp_path / "fbl-late", by_arm["weights"][24:30])
    fbl = subprocess.run(
        [CLI, "-c", str(ms.config_path), "fbl", "--maildir", str(late)], capture_output=True, text=True
    )
    complaints = [line for line in fbl.stdout.splitlines() if line.startswith("complaint ")]
    assert fbl.returncode == 0 and len(complaints) == 6, fbl.stdout + fbl.stderr
    assert "; experiment ab arm " not in fbl.stdout
    more = 60
    assert ms.send_many(more, threads=2, recipients=lambda i: [f"v{i}@gmail.com"]) == []
    ms.sink.wait_for(N + more, timeout=120)
    new_lines = wait_for_decision_lines(ms.base / "policyd.log", N + more)[N:]
    arm_of = {line["queue_id"]: line["arm"] for line in new_lines}  # from_log() reads these only
    assert min(decided_at(arm_of)) >= since
    try:
        wait_until(lambda: from_log() == counted(), MAIL_S, "the new run's counts to match its messages' log")
    except AssertionError as exc:
        raise AssertionError((from_log(), counted())) from exc
    assert sum(counted()[(arm, "sent")] for arm in ("weights", "solo1")) == more
    # the deciders write these counts in batches: up to 5 s after a quiet host's last decision
    want = dict(Counter(arm_of.values()))
    wait_until(lambda: decided() == want, 60, f"the arms' decisions counted: {want}")
    assert not any(ms.rdb.hexists(f"{{sb}}:expstats:ab:{arm}", "complained") for arm in ("weights", "solo1"))


def test_a_rule_order_experiment_over_a_match_on_real_postfix(mail_system):
    """Arms that differ in rule order: news mail to gmail goes by the news rule in one
    arm and by the gmail rule (out1 alone) in the other; other mail is not in it."""
    orders = [
        {"name": "as-is", "rule_order": ["news"], "split": 50},
        {"name": "gmail-first", "rule_order": ["gmail", "news"], "split": 50},
    ]
    ms = mail_system(
        {
            "pools": {"solo1": {"endpoints": [{"endpoint": "out1", "weight": 1}]}},
            "rules": [
                {"name": "news", "sender_domain": ["news.test"], "pool": "main"},
                {"name": "gmail", "provider": ["google"], "pool": "solo1"},
                {"name": "all", "pool": "main"},
            ],
            "experiments": [{"name": "order", "match": {"sender_domain": ["news.test"]}, "arms": orders}],
        },
        domains=["gmail.com"],
        feedback=True,
    )
    subprocess.run([CLI, "-c", str(ms.config_path), "experiment", "start", "order"], check=True)
    wait_until(lambda: ms.rdb.hget("{sb}:experiment:order", "state") == "running", 60, "the start")
    n = 300

    def sender(i: int) -> str:
        return "a@news.test" if i < n else "a@shop.test"

    assert ms.send_many(n + 20, threads=4, recipients=lambda i: [f"u{i}@gmail.com"], sender=sender) == []
    ms.sink.wait_for(n + 20, timeout=120)
    lines = wait_for_decision_lines(ms.base / "policyd.log", n + 20)
    news = [line for line in lines if line.get("arm")]
    assert len(news) == n and all(line["experiment"] == "order" for line in news)
    assert_shares(Counter(line["arm"] for line in news), {"as-is": 0.5, "gmail-first": 0.5}, "arms")
    routes = {(line["arm"], line["rule"], line["pool"]) for line in news}
    assert routes == {("as-is", "news", "main"), ("gmail-first", "gmail", "solo1")}
    assert {line["endpoint"] for line in news if line["arm"] == "gmail-first"} == {"out1"}
    assert {line["endpoint"] for line in news if line["arm"] == "as-is"} == {"out1", "out2", "out3"}
    # shop mail matches the gmail rule and is in no arm
    assert {(line["rule"], line.get("arm", "")) for line in lines if line not in news} == {("gmail", "")}

    def sent() -> dict[str, str | None]:
        return {a: ms.rdb.hget(f"{{sb}}:expstats:order:{a}", "sent") for a in ("as-is", "gmail-first")}

    arms = Counter(line["arm"] for line in news)
    wait_until(lambda: sent() == {a: str(arms[a]) for a in arms}, MAIL_S, "every delivery counted in its arm")
