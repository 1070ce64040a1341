"""`status` and `explain` read endpoint state the same way (one parser, state/live.py's
``returns_at``): for every kind of state, against real Redis, what status shows and
whether explain finds the endpoint eligible for a gmail message agree."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from smtp_balancer.cli.main import main
from tests.cli.test_main import CLOCK

HOUR = 3600
NOW = int(CLOCK.wall())

# name -> (what to write, status's state for out2, out2 eligible for gmail, where status shows it)
Setup = Callable[[redis.Redis], object]
CASES: dict[str, tuple[Setup, str, bool, str]] = {
    "nothing set": (lambda r: None, "active", True, ""),
    "drained": (
        lambda r: r.hset("{sb}:endpoint:out2:state", mapping={"state": "drained"}),
        "drained",
        False,
        "",
    ),
    "quarantined, no until": (
        lambda r: r.hset("{sb}:endpoint:out2:state", mapping={"state": "quarantined", "reason": "dnsbl"}),
        "quarantined",
        False,
        "",
    ),
    "quarantined until later": (
        lambda r: r.hset("{sb}:endpoint:out2:state", mapping={"state": "quarantined", "until": NOW + HOUR}),
        "quarantined",
        False,
        "",
    ),
    "quarantine lifted (until passed)": (
        lambda r: r.hset("{sb}:endpoint:out2:state", mapping={"state": "quarantined", "until": NOW - HOUR}),
        "active",
        True,
        "lifted",
    ),
    "quarantined until later, as a decimal": (
        lambda r: r.hset(
            "{sb}:endpoint:out2:state", mapping={"state": "quarantined", "until": f"{NOW + HOUR}.5"}
        ),
        "quarantined",
        False,
        "",
    ),
    "quarantined, junk until": (
        lambda r: r.hset("{sb}:endpoint:out2:state", mapping={"state": "quarantined", "until": "soon"}),
        "quarantined",
        False,
        "",
    ),
    "junk state": (
        lambda r: r.hset("{sb}:endpoint:out2:state", mapping={"state": "asleep"}),
        "active",
        True,
        "",
    ),
    "suspended for google": (
        lambda r: r.set("{sb}:suspend:out2:google", "421", ex=HOUR),
        "active",
        False,
        "google",
    ),
    "suspended for all": (
        lambda r: r.set("{sb}:suspend:out2:all", "blocked", ex=HOUR),
        "active",
        False,
        "all",
    ),
    "suspended for yahoo": (
        lambda r: r.set("{sb}:suspend:out2:yahoo", "421", ex=HOUR),
        "active",
        True,
        "yahoo",
    ),
    "throttled for google": (
        lambda r: r.set("{sb}:throttle:out2:google", "0.5 deferrals", ex=HOUR),
        "active",
        True,
        "throttle",
    ),
}


def run(config: str, *args: str, capsys) -> str:
    assert main(["-c", config, *args], clock=CLOCK) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("case", list(CASES))
def test_status_and_explain_agree(case: str, make_config, rdb: redis.Redis, tmp_path: Path, capsys) -> None:
    setup, state, eligible, shown = CASES[case]
    make_config()
    config = str(tmp_path / "config.yaml")
    setup(rdb)
    status = json.loads(run(config, "status", "--json", capsys=capsys))
    out2 = status["endpoints"]["out2"]
    explained = run(config, "explain", "--sender", "a@shop.test", "--rcpt", "bob@gmail.com", capsys=capsys)
    row = re.search(r"^\s+main\s+out2\s+\d+\s+(yes|no)\s+(.*)$", explained, re.M)
    assert row is not None, explained
    assert (row[1] == "yes") is eligible, (case, row[0])
    assert out2["state"] == state, (case, out2)
    # and status says why, where explain does
    assert out2["lifted"] is (shown == "lifted")
    if "later" in case:  # it lifts when the deciders lift it
        assert out2["until"] == NOW + HOUR
    suspended = {s["provider"] for s in out2["suspensions"]}
    assert suspended == ({shown} if shown in ("google", "all", "yahoo") else set())
    throttled = [(t["endpoint"], t["provider"], t["factor"]) for t in status["throttles"]]
    assert throttled == ([("out2", "google", 0.5)] if shown == "throttle" else [])
    if shown == "throttle":
        assert "throttled to 0.5" in row[2]
    text = run(config, "status", capsys=capsys)
    in_service = not re.search(r"^  out2 +(drained|quarantined)", text, re.M)
    assert in_service is (state == "active")


DAY = datetime.fromtimestamp(NOW, UTC).date()
# name -> (config, what to write, out2 eligible for gmail: True, False, or None when explain
# leaves it out of the table)
LIMITS: dict[str, tuple[dict, Setup, bool | None]] = {
    "adaptive factor for google": (
        {"pools": {"main": {"adaptive": True}}},
        lambda r: r.set("{sb}:adaptive:out2:google", "0.5 deferrals 30%", ex=HOUR),
        True,
    ),
    "rate cap slowed for google": (
        {"endpoints": {"out2": {"rate_caps": {"google": 100}}}},
        lambda r: r.set("{sb}:slow:out2:google", "0.5 421 seen", ex=HOUR),
        True,
    ),
    "warming, at its day cap": (
        {"endpoints": {"out2": {"warmup": {"start": DAY.isoformat(), "schedule": [5]}}}},
        lambda r: r.hset(f"{{sb}}:count:out2:day:{DAY:%Y%m%d}", "total", 5),
        False,
    ),
    "unplumbed on this host": (
        # TEST-NET-1: an address no host of ours has
        {"endpoints": {"out2": {"bind_address": "192.0.2.77"}}, "decision": {"bind_check_s": 30}},
        lambda r: None,
        None,
    ),
}


@pytest.mark.parametrize("case", list(LIMITS))
def test_status_shows_what_explain_weighs(
    case: str, make_config, rdb: redis.Redis, tmp_path: Path, capsys
) -> None:
    extra, setup, eligible = LIMITS[case]
    make_config(extra)
    config = str(tmp_path / "config.yaml")
    setup(rdb)
    status = json.loads(run(config, "status", "--json", capsys=capsys))
    text = run(config, "status", capsys=capsys)
    explained = run(config, "explain", "--sender", "a@shop.test", "--rcpt", "bob@gmail.com", capsys=capsys)
    row = re.search(r"^\s+main\s+out2\s+\d+\s+(yes|no)\s+(.*)$", explained, re.M)
    assert (None if row is None else row[1] == "yes") is eligible, (case, explained)
    out2 = status["endpoints"]["out2"]
    assert out2["state"] == "active"  # none of these takes it out of service
    if case.startswith("adaptive"):
        assert [(a["endpoint"], a["provider"], a["factor"]) for a in status["adaptive"]] == [
            ("out2", "google", 0.5)
        ]
        assert "adaptive factor 0.5" in row[2] and re.search(r"^  out2 +google +0\.5 ", text, re.M)
    elif case.startswith("rate cap"):
        [limit] = [x for x in status["limits"] if x["endpoint"] == "out2" and x["rate_cap"]]
        assert (limit["provider"], limit["rate_cap"], limit["slow_factor"]) == ("google", 100, 0.5)
        assert "slowed to 50" in text
    elif case.startswith("warming"):
        assert (out2["day_count"], out2["day_cap"]) == (5, 5)
        assert "day cap 5/5" in row[2] and re.search(r"^  out2 .* 5/5 ", text, re.M)
    else:
        why = "bind address 192.0.2.77 is not on this host (decision.bind_check_s)"
        assert status["left_out_here"] == {"out2": why}
        assert f"left out:  out2: {why}" in explained
        assert re.search(rf"^  out2 +{re.escape(why)}$", text, re.M), text
    if not case.startswith("unplumbed"):
        assert status["left_out_here"] == {}


def test_status_for_another_host_leaves_out_what_explain_for_it_does(
    make_config, rdb: redis.Redis, tmp_path: Path, capsys
) -> None:
    """``--host``: that fleet host's view; its bind addresses are not checked from here."""
    make_config(
        {
            "endpoints": {
                "out1": {"host": "mta1"},
                "out2": {"host": "mta1", "bind_address": "192.0.2.77"},
                "out3": {"host": "mta2"},
            },
            "decision": {"bind_check_s": 30},
        }
    )
    config = str(tmp_path / "config.yaml")
    why = "an endpoint of host mta2, not of mta1"
    status = json.loads(run(config, "status", "--json", "--host", "mta1", capsys=capsys))
    assert status["left_out_here"] == {"out3": why}  # out2's address is mta1's business
    explained = run(
        config,
        "explain",
        "--host",
        "mta1",
        "--sender",
        "a@shop.test",
        "--rcpt",
        "bob@gmail.com",
        capsys=capsys,
    )
    assert f"left out:  out3: {why}" in explained and "left out:  out2" not in explained
