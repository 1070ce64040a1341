"""``smtp-balancer replay`` from log files: the scenario's logs written as the
daemons and Postfix write them, read back, and decided again."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import pty
import select
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from integration.log_lines import decision_lines
from smtp_balancer.cli import replay as replay_cli
from smtp_balancer.cli.main import main
from smtp_balancer.cli.parser import build_parser
from smtp_balancer.decision.facts import Decision
from tests.replay.scenario import LIVE, logged


def postfix_line(at: float, d) -> str:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%b %d %H:%M:%S")
    said = d.response if d.status == "sent" else f"host {d.relay_host}[127.0.0.1] said: {d.response}"
    return (
        f"{stamp} mta postfix/{d.endpoint}/smtp[4242]: {d.queue_id}: to=<{d.recipient}>,"
        f" relay={d.relay_host}[127.0.0.1]:25, delay=0.1, delays=0/0/0.05/0.05, dsn={d.dsn},"
        f" status={d.status} ({said})"
    )


def exim_id(queue_id: str) -> str:
    return f"1xYgXf-{int(queue_id[1:]):06d}-2X"


def exim_line(at: float, d) -> str:
    """Exim 4.96's main log line for a delivery (=>) or a deferral (==)."""
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    where = f"R=sb_direct T=sb_{d.endpoint} H={d.relay_host} [127.0.0.1]"
    if d.status == "sent":
        return f'{stamp} {d.queue_id} => {d.recipient} {where} C="250 2.0.0 Ok"'
    error = f"SMTP error from remote mail server after RCPT TO:<{d.recipient}>:"
    deferred = where.replace(" H=", " defer (-44) H=")
    return f"{stamp} {d.queue_id} == {d.recipient} {deferred}: {error} {d.response}"


def logs(tmp_path: Path, mta: str = "postfix") -> list[str]:
    messages, attempts = logged()
    if mta == "exim":  # Exim's message ids, in both logs
        messages = [
            replace(m, queue_id=exim_id(m.queue_id), facts=replace(m.facts, queue_id=exim_id(m.queue_id)))
            for m in messages
        ]
        attempts = [
            replace(a, delivery=replace(a.delivery, queue_id=exim_id(a.delivery.queue_id))) for a in attempts
        ]
    decided = [
        (
            m.facts,
            Decision(outcome=m.outcome, reason="x", endpoint=m.endpoint or None, rule=m.rule, r=m.r),
            m.at,
        )
        for m in messages
    ]
    line = exim_line if mta == "exim" else postfix_line
    (tmp_path / "policyd.log").write_text("\n".join(["garbage", *decision_lines(decided)]) + "\n")
    (tmp_path / "mail.log").write_text("\n".join(line(a.at, a.delivery) for a in attempts) + "\n")
    (tmp_path / "live.yaml").write_text(yaml.safe_dump(LIVE))
    pools = {"main": {"endpoints": [{"endpoint": "out1", "weight": 3}, {"endpoint": "out3", "weight": 1}]}}
    (tmp_path / "candidate.yaml").write_text(yaml.safe_dump({**LIVE, "pools": pools}))
    return [
        "-c", str(tmp_path / "live.yaml"), "replay", "--candidate", str(tmp_path / "candidate.yaml"),
        "--mta", mta, "--decisions", str(tmp_path / "policyd.log"), "--mta-log", str(tmp_path / "mail.log"),
    ]  # fmt: skip


@pytest.mark.parametrize("mta", ["postfix", "exim"])
def test_replay_from_the_logs_reproduces_them_and_shows_the_candidate(tmp_path: Path, capsys, mta: str):
    args = logs(tmp_path, mta)
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["messages"] == 300 and report["lines_not_used"] == {"not a structured log line": 1}
    for route in report["routes"]:
        assert route["actual"] == route["live_replayed"], route
        assert route["candidate"] == 0 or route["endpoint"] != "out2"
    (suspended,) = report["actions"]["live_replayed"]
    assert (suspended["rule"], suspended["endpoint"], suspended["provider"]) == (
        "google-rate-limited",
        "out2",
        "google",
    )
    assert report["actions"]["candidate"] == []
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("300 messages replayed") and "(only here)" in text


def test_the_candidate_in_a_second_process_gives_the_same_report(tmp_path: Path, capsys):
    """--jobs 2 (the default for files on 2 cores) decides the candidate in a forked
    process that reads the logs too: the report is the one process's, field for field."""
    args = logs(tmp_path)
    reports = []
    for jobs in ("1", "2"):
        assert main([*args, "--json", "--jobs", jobs]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1]
    assert reports[0]["actions"]["live_replayed"] and any(r["candidate"] for r in reports[0]["routes"])


def test_logs_on_stdin_are_replayed_in_one_process(tmp_path: Path):
    args = build_parser().parse_args(logs(tmp_path))
    assert replay_cli.jobs_of(args) == (2 if (os.cpu_count() or 1) >= 2 else 1)
    args.jobs = 1
    assert replay_cli.jobs_of(args) == 1
    args.jobs, args.decisions = None, ["-"]
    assert replay_cli.jobs_of(args) == 1
    args.jobs = 2  # asked for, but stdin can be read only once
    assert replay_cli.jobs_of(args) == 1


def test_bad_inputs_are_a_message_and_an_exit_code(tmp_path: Path, capsys):
    args = logs(tmp_path)
    (tmp_path / "candidate.yaml").write_text("pools: [\n")
    assert main(args) == 2
    assert "candidate config error" in capsys.readouterr().err
    (tmp_path / "candidate.yaml").write_text(yaml.safe_dump(LIVE))
    (tmp_path / "policyd.log").write_text("nothing to see\n")
    assert main(args) == 1
    assert "no decision lines that replay can use" in capsys.readouterr().err
    logs(tmp_path)  # the good logs again, then an MTA log that is not there
    assert main([*args[:-1], str(tmp_path / "missing.log")]) == 1
    err = capsys.readouterr().err
    assert "cannot read log" in err and "Traceback" not in err


def test_rotated_gzipped_interleaved_and_hostile_logs_replay_as_the_clean_ones(tmp_path: Path, capsys):
    args = logs(tmp_path)
    assert main([*args, "--json"]) == 0
    clean = json.loads(capsys.readouterr().out)
    lines = (tmp_path / "policyd.log").read_text().splitlines(keepends=True)[1:]  # past the garbage
    older, current = lines[:150], lines[150:]
    current[10], current[11] = current[11], current[10]  # two workers, a line a second late
    with gzip.open(tmp_path / "policyd.log.1.gz", "wt") as f:
        f.writelines(older)
    hostile = [
        "\x00\xff binary junk\n",
        "Dec  5 10:00:00 mta postfix/smtpd[1]: connect from x[127.0.0.1]\n",  # another log's line
        current[0].replace(" reason=x", ""),  # a decision line with a field missing
        current[1][: len(current[1]) // 2],  # and, last, a line cut short with no newline
    ]
    (tmp_path / "policyd.log").write_text("".join(current[:-1] + hostile[:3] + current[-1:] + hostile[3:]))
    mail = (tmp_path / "mail.log").read_text().splitlines(keepends=True)
    (tmp_path / "mail.log").write_text("".join([*mail[:5], "garbage ==> nothing\n", "\n", *mail[5:]]))
    rotated = [
        *args[: args.index("--decisions") + 1],
        str(tmp_path / "policyd.log"),
        str(tmp_path / "policyd.log.1.gz"),
    ]
    assert main([*rotated, *args[args.index("--mta-log") :], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["routes"] == clean["routes"] and report["actions"] == clean["actions"]
    assert report["messages"] == 300
    assert report["lines_not_used"] == {
        "not a structured log line": 2,
        "decision line cut short or missing fields (outcome, endpoint, reason)": 1,
        "last line of a log with no newline: taken as cut short": 1,
    }


def test_a_gzipped_log_cut_short_is_a_message_not_a_traceback(tmp_path: Path, capsys):
    args = logs(tmp_path)
    whole = gzip.compress((tmp_path / "policyd.log").read_bytes())
    (tmp_path / "policyd.log").write_bytes(whole[: len(whole) // 2])
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "cannot read log" in err and "Traceback" not in err


def test_the_progress_line_shows_on_a_terminal_and_not_in_a_pipe(tmp_path: Path, monkeypatch):
    """A real pseudo-terminal for stderr: the line comes every PROGRESS_EVERY messages."""
    monkeypatch.setattr(replay_cli, "PROGRESS_EVERY", 100)
    args = logs(tmp_path)
    err = io.StringIO()  # not a terminal: no progress line
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(args) == 0
    assert "replayed" not in err.getvalue(), err.getvalue()
    leader, follower = pty.openpty()
    try:
        with (
            open(follower, "w", closefd=False) as tty,
            contextlib.redirect_stderr(tty),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            assert main(args) == 0
        shown = b""
        while select.select([leader], [], [], 0)[0]:  # all the terminal holds, however it comes
            shown += os.read(leader, 65536)
    finally:
        os.close(leader)
        os.close(follower)
    assert "replayed 300 messages, at 2026-11-24" in shown.decode() and "/s" in shown.decode(), shown


def test_html_report_is_written_beside_the_text_and_needs_matplotlib(tmp_path: Path, capsys, monkeypatch):
    args = logs(tmp_path)
    page = tmp_path / "replay.html"
    assert main([*args, "--html", str(page)]) == 0
    assert capsys.readouterr().out.startswith("300 messages replayed")
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 3 and "300 messages replayed" in text
    assert main([*args, "--html", str(tmp_path / "no" / "such" / "folder.html")]) == 1
    assert "cannot write" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main([*args, "--html", str(page)]) == 1
    captured = capsys.readouterr()
    assert "replay --html needs matplotlib" in captured.err and captured.out == ""
