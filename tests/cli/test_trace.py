"""``smtp-balancer trace`` finds the decision where the shipped units log it by default:
journald, read with the real journalctl from a real journal file (written by
systemd-journal-remote), beside the MTA's log named by feedback.log_file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from smtp_balancer.cli.main import main
from tests.cli.test_tracing import POSTFIX

JOURNAL_REMOTE = "/usr/lib/systemd/systemd-journal-remote"  # .ci/install: systemd-journal-remote


def write_journal(path: Path, entries: list[tuple[str, str]]) -> None:
    """A real journal file holding (SYSLOG_IDENTIFIER, MESSAGE) entries, in journald's export format."""
    export = "".join(
        f"__REALTIME_TIMESTAMP={1_764_666_000_000_000 + i}\nSYSLOG_IDENTIFIER={ident}\nMESSAGE={message}\n\n"
        for i, (ident, message) in enumerate(entries)
    )
    subprocess.run([JOURNAL_REMOTE, f"--output={path}", "-"], input=export, text=True, check=True, timeout=60)


def test_the_decision_is_read_from_the_journal_by_default(make_config, tmp_path: Path, capsys) -> None:
    decision, mta_lines = POSTFIX[0], POSTFIX[1:]
    mail_log = tmp_path / "mail.log"
    mail_log.write_text("\n".join(mta_lines) + "\n")
    make_config({"feedback": {"log_file": str(mail_log)}})
    journal = tmp_path / "daemons.journal"
    write_journal(
        journal,
        [
            ("smtp-balancer-feedback", 'msg=decision queue_id=A14F220C580 endpoint=out9 via="not a decider"'),
            ("smtp-balancer-policyd", decision),
        ],
    )
    config = str(tmp_path / "config.yaml")
    code = main(["-c", config, "trace", "A14F220C580", "--journal-file", str(journal)])
    out = capsys.readouterr().out
    assert code == 0
    assert "via policyd: outcome route, rule bulk, pool bulk, endpoint out2" in out
    assert "out9" not in out  # only the deciders' identifiers are read
    assert "outcome:    sent" in out  # the delivery lines came from feedback.log_file
    # without the journal the decision is not known, and the trace says so
    assert main(["-c", config, "trace", "A14F220C580", "--no-journal"]) == 0
    assert "decision:   none logged" in capsys.readouterr().out


def test_a_journal_file_that_cannot_be_read_is_named(make_config, tmp_path: Path, capsys) -> None:
    make_config({"feedback": {"log_file": str(tmp_path / "mail.log")}})
    (tmp_path / "mail.log").write_text("")
    broken = tmp_path / "broken.journal"
    broken.write_text("not a journal\n")
    code = main(["-c", str(tmp_path / "config.yaml"), "trace", "A14F220C580", "--journal-file", str(broken)])
    err = capsys.readouterr().err
    assert code != 0 and f"cannot read journal {broken}" in err


def test_no_journalctl_means_the_mta_log_alone(make_config, tmp_path: Path, capsys, monkeypatch) -> None:
    mail_log = tmp_path / "mail.log"
    mail_log.write_text("\n".join(POSTFIX) + "\n")  # a host whose syslog has the decisions too
    make_config({"feedback": {"log_file": str(mail_log)}})
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("journalctl") is None
    assert main(["-c", str(tmp_path / "config.yaml"), "trace", "A14F220C580"]) == 0
    assert "endpoint out2" in capsys.readouterr().out
