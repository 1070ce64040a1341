"""``smtp-balancer reputation import|show`` on real Redis: what it says, exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtp_balancer.clock import FixedClock
from smtp_balancer.state.keys import KeySchema
from tests.cli.conftest import cli_runner

FIXTURES = Path(__file__).resolve().parents[1] / "reputation" / "fixtures"
CLOCK = FixedClock(datetime(2026, 12, 5, 15, 0, tzinfo=UTC))  # the exports' day


@pytest.fixture
def cli(make_config, tmp_path: Path, capsys):
    make_config()
    return cli_runner(str(tmp_path / "config.yaml"), CLOCK, capsys)


def test_import_says_what_it_did_and_show_lists_the_records(cli, rdb):
    code, out, err = cli(
        "reputation", "import", str(FIXTURES / "postmaster_v1_list.json"), str(FIXTURES / "snds_data.csv")
    )
    assert code == 0 and err == ""
    assert "acted: suspend_provider (out2, google): reputation rule google-ip-bad:" in out
    assert "acted: suspend_provider (out2, microsoft): reputation rule snds-red:" in out
    assert "2 not used: postmaster ip_reputation about an IP no endpoint sends from" in out
    assert rdb.exists(KeySchema().suspension("out2", "google"))
    code, out, _ = cli("reputation", "show")
    assert code == 0
    assert any(
        line.split()[:3] == ["out2", "google", "postmaster:ip_reputation:127.0.0.3"]
        for line in out.splitlines()
    )
    code, out, _ = cli("reputation", "show", "--json")
    shown = {(r["endpoint"], r["provider"]): r["records"] for r in json.loads(out)}
    assert shown[("out2", "microsoft")]["snds:filter_result:127.0.0.3"] == "2026-12-05 RED"


def test_import_again_reports_nothing_changed_in_json(cli):
    cli("reputation", "import", str(FIXTURES / "snds_status.csv"))
    code, out, _ = cli(
        "reputation", "import", str(FIXTURES / "snds_status.csv"), "--json", "--format", "snds-status"
    )
    report = json.loads(out)
    assert (
        code == 0
        and report["changed"] == 0
        and report["actions"] == []
        and report["kinds"] == {"snds-status": 1}
    )


def test_bad_files_are_a_message_and_exit_1_and_no_files_exit_2(cli, tmp_path):
    cut = tmp_path / "cut.json"
    cut.write_text('{"trafficStats": [{"name": "domains/shop.test/tra')
    code, _, err = cli("reputation", "import", str(cut), str(tmp_path / "missing.csv"))
    assert code == 1 and "Traceback" not in err
    assert f"smtp-balancer: cannot import {cut}: not JSON" in err
    assert f"smtp-balancer: cannot import {tmp_path / 'missing.csv'}: No such file or directory" in err
    code, _, err = cli("reputation", "import")
    assert code == 2 and "reputation import needs one or more export files" in err
