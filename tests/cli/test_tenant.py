"""``smtp-balancer tenant hold|release|list`` on real Redis; the hold queue's side is
tested on real Postfix (integration/test_tenant_hold_postfix.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtp_balancer.clock import FixedClock
from tests.cli.conftest import cli_runner

CLOCK = FixedClock(datetime(2026, 12, 5, 15, 0, tzinfo=UTC))


@pytest.fixture
def cli(make_config, tmp_path: Path, capsys):
    make_config({"tenants": ["shop.test"], "pools": {"jail": {"endpoints": [{"endpoint": "out3"}]}}})
    return cli_runner(str(tmp_path / "config.yaml"), CLOCK, capsys)


def test_hold_list_release(cli, rdb, tmp_path):
    assert cli("tenant", "list")[1] == "no tenant is held or moved\n"
    code, out, _ = cli("tenant", "hold", "Shop.Test.", "--for", "2h", "--reason", "complaints at 0.4%")
    assert code == 0 and out == "tenant shop.test held for 2h\n"
    assert cli("tenant", "hold", "shop.test")[1] == "tenant shop.test is held already\n"
    code, out, _ = cli("tenant", "list")
    assert out.split()[0] == "shop.test" and out.rstrip().endswith("complaints at 0.4%")
    # status shows it, as text and in its JSON
    code, out, _ = cli("status")
    shown = out[out.index("tenants held") :].splitlines()
    assert shown[2].split()[0] == "shop.test" and shown[2].rstrip().endswith("complaints at 0.4%")
    code, out, _ = cli("status", "--json")
    (left, why) = json.loads(out)["tenant_holds"]["shop.test"]
    assert why == "complaints at 0.4%" and 7190 <= left <= 7200
    code, out, err = cli("tenant", "release", "shop.test", "--postfix-dir", str(tmp_path / "no-postfix"))
    assert "tenant shop.test released" in out and rdb.exists("{sb}:tenanthold:shop.test") == 0
    assert code == 1 and "smtp-balancer: the hold queue was not released:" in err and "Traceback" not in err


def test_release_on_an_exim_that_cannot_run_says_so(cli, rdb, tmp_path):
    cli("tenant", "hold", "shop.test")
    missing = str(tmp_path / "no-exim")
    code, out, err = cli("tenant", "release", "shop.test", "--exim", missing)
    assert "tenant shop.test released" in out and rdb.exists("{sb}:tenanthold:shop.test") == 0
    assert code == 1 and f"smtp-balancer: Exim's frozen messages were not thawed: {missing} -bp:" in err


def test_move_shows_in_list_status_and_explain_and_release_ends_it(cli, rdb):
    code, _, err = cli("tenant", "move", "shop.test", "--pool", "nowhere")
    assert code == 4 and "tenant move needs --pool, one of the pools (main, jail)" in err
    code, out, _ = cli(
        "tenant", "move", "shop.test", "--pool", "jail", "--for", "2h", "--reason", "spam 0.2%"
    )
    assert code == 0 and out == "tenant shop.test moved to pool jail for 2h\n"
    assert "is moved already" in cli("tenant", "move", "shop.test", "--pool", "main")[1]
    assert cli("tenant", "list")[1].split()[2:] == ["pool", "jail:", "spam", "0.2%"]
    code, out, _ = cli("status")
    shown = out[out.index("tenants moved") :].splitlines()
    assert shown[2].split()[:3] == ["shop.test", "jail", "2h"]
    code, out, _ = cli("status", "--json")
    (left, pool, why) = json.loads(out)["tenant_moves"]["shop.test"]
    assert (pool, why) == ("jail", "spam 0.2%") and 7190 <= left <= 7200
    code, out, _ = cli("explain", "--sender", "a@shop.test", "--rcpt", "b@gmail.com")
    assert "moved:     the sender's tenant is moved: shop.test to pool jail spam 0.2%" in out
    assert "pool:      jail" in out and "pick:      out3 -> FILTER out3:" in out
    assert "pool:      main" in cli("explain", "--sender", "a@other.test", "--rcpt", "b@gmail.com")[1]
    cli("tenant", "release", "shop.test", "--exim", "/nonexistent/exim4")
    assert not rdb.exists("{sb}:tenantpool:shop.test")


def test_a_tenant_not_configured_or_missing_is_refused(cli):
    code, _, err = cli("tenant", "hold", "evil.test")
    assert code == 4 and "evil.test is not one of the configured tenants (shop.test)" in err
    code, _, err = cli("tenant", "release")
    assert code == 4 and "tenant release needs the tenant" in err
