"""``smtp-balancer shadow report``: real decision lines in, agreement and differences out."""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from integration.log_lines import decision_lines
from smtp_balancer.cli.main import main
from smtp_balancer.cli.shadow import ShadowTally
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.observe.logs import LogFormat


def routed(endpoint: str, reason: str = "weight 1 in pool main") -> Decision:
    return Decision(outcome="route", reason=reason, endpoint=endpoint, pool="main", rule="all")


def lines(pairs: list[tuple[Decision, Decision | None]], style: LogFormat = "logfmt") -> list[str]:
    """The decision lines the daemons write for these (live, shadow) decisions."""
    return decision_lines(((Facts(queue_id="Q1"), replace(a, shadow=b), None) for a, b in pairs), style)


PAIRS = [(routed("out1"), routed("out1"))] * 6 + [
    (routed("out2", "weight 2 in pool main"), routed("out1"))
] * 3
PAIRS += [
    (routed("out3"), Decision(outcome="default", reason="no eligible endpoint", pool="main", rule="all"))
]


@pytest.mark.parametrize("style", ["logfmt", "json"])
def test_agreement_moves_and_reasons_are_counted(style: str):
    tally = ShadowTally().add_all(lines(PAIRS, style))
    assert (tally.decisions, tally.same, tally.different, tally.unshadowed) == (10, 6, 4, 0)
    assert tally.moves == {("out2", "out1"): 3, ("out3", "default"): 1}
    assert tally.why[("weight 2 in pool main", "weight 1 in pool main")] == 3
    assert tally.by_rule_pool == {("all", "main", True): 6, ("all", "main", False): 4}


def test_garbage_cut_and_unshadowed_lines_are_counted_not_fatal():
    good = lines([*PAIRS[:2], (routed("out1"), None)])
    cut = good[0][: good[0].index("shadow_pool")]  # a line cut after its first shadow fields
    tally = ShadowTally().add_all(
        [*good, cut, "", "garbage \x00\xff", '{"msg": "decision"', "ts=1 msg=decision shadow_rule="]
    )
    assert tally.lines == 8
    assert (tally.same, tally.unshadowed, tally.incomplete) == (2, 1, 2)


def test_the_command_reads_plain_gzipped_and_stdin_logs(tmp_path: Path, capsys, monkeypatch):
    text = "\n".join(lines(PAIRS)) + "\n"
    (tmp_path / "policyd.log").write_text(text)
    with gzip.open(tmp_path / "policyd.log.1.gz", "wt") as f:
        f.write(text)
    code = main(
        ["shadow", "report", str(tmp_path / "policyd.log"), str(tmp_path / "policyd.log.1.gz"), "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and (report["same"], report["different"]) == (12, 8)
    assert report["moves"][0] == {"live": "out2", "candidate": "out1", "messages": 6}
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["shadow", "report"]) == 0
    out = capsys.readouterr().out
    assert "the candidate agrees on 6 (60.0%), differs on 4" in out
    assert "       3  out2 -> out1" in out


def test_an_unreadable_or_cut_gzip_log_is_a_message(tmp_path: Path, capsys):
    assert main(["shadow", "report", str(tmp_path / "missing.log")]) == 1
    assert "cannot read log" in capsys.readouterr().err
    whole = gzip.compress(("\n".join(lines(PAIRS)) + "\n").encode())
    (tmp_path / "cut.gz").write_bytes(whole[: len(whole) // 2])
    assert main(["shadow", "report", str(tmp_path / "cut.gz")]) == 1
    err = capsys.readouterr().err
    assert f"cannot read log {tmp_path / 'cut.gz'}" in err and "Traceback" not in err
