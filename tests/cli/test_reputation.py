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


def test_status_explain_and_trace_show_the_records_in_force(make_config, tmp_path: Path, capsys, rdb):
    mail_log = tmp_path / "mail.log"
    mail_log.write_text(
        "ts=2026-12-05T14:00:00.000+00:00 level=info logger=smtp_balancer.decision msg=decision"
        " decision_id=94a05d88bad2a4e9 via=policyd queue_id=A14F220C580 outcome=route rule=bulk pool=bulk"
        ' endpoint=out2 degraded=false nrcpt=1 sender_domain=news.shop.test reason="weight 2 in pool bulk"'
        ' action="FILTER out2:"\n'
    )
    make_config({"tenants": ["shop.test"], "feedback": {"log_file": str(mail_log)}})
    cli = cli_runner(str(tmp_path / "config.yaml"), CLOCK, capsys)
    files = [str(FIXTURES / n) for n in ("postmaster_v1_list.json", "postmaster_v2_query.json")]
    code, out, err = cli("reputation", "import", *files)
    assert code == 0 and err == ""
    assert "acted: hold_tenant (tenant shop.test): reputation rule google-spam-rate-hold:" in out

    code, out, _ = cli("status")
    assert code == 0
    rows = [line.split() for line in out.split("\nreputation (", 1)[1].splitlines()[1:]]
    assert ["out2", "google", "postmaster", "ip_reputation", "127.0.0.3", "2026-12-05", "BAD"] in rows
    assert ["shop.test", "google", "postmaster", "spam_ratio", "-", "2026-12-05", "0.0041"] in rows
    assert [
        "shop.test",
        "google",
        "postmaster",
        "spam_ratio",
        "-",
        "2026-12-04",
        "0.0008",
    ] not in rows  # same field
    assert "tenants held" in out and "google-spam-rate-hold" in out
    code, out, _ = cli("status", "--json")
    held = json.loads(out)["reputation"]
    assert {
        "scope": "domain",
        "name": "shop.test",
        "provider": "google",
        "source": "postmaster",
        "signal": "fbl_spam_ratio",
        "subject": "spring-sale:shop:bulk:s1",
        "day": "2026-12-05",
        "value": "0.012",
        "detail": "",
    } in held

    code, out, _ = cli(
        "explain", "--sender", "news@news.shop.test", "--rcpt", "bob@gmail.com", "--class", "bulk"
    )
    lines = [line for line in out.splitlines() if line.startswith("reputation:")]
    assert "reputation: out2 (google): postmaster ip_reputation BAD for 127.0.0.3 on 2026-12-05" in lines
    assert "reputation: shop.test (google): postmaster spam_ratio 0.0041 on 2026-12-05" in lines
    assert not any("(microsoft)" in line or "news.test" in line for line in lines)
    assert (
        "held:      the sender's tenant is held; its mail waits in the hold queue: shop.test: reputation"
        in out
    )

    code, out, _ = cli("trace", "A14F220C580", "--log", str(mail_log), "--no-journal")
    assert "  reputation: out2 (google): postmaster ip_reputation BAD for 127.0.0.3 on 2026-12-05" in out
    assert "  reputation: shop.test (google): postmaster spam_ratio 0.0041 on 2026-12-05" in out
