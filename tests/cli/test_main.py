"""The CLI against a real redis-server, through its real entry point."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import redis
import yaml

from smtp_balancer.cli.common import EXIT_CONFIG, EXIT_REDIS, EXIT_USAGE
from smtp_balancer.cli.main import main
from smtp_balancer.clock import FixedClock, utc_now
from smtp_balancer.decision.experiments import uniform
from smtp_balancer.durations import format_duration
from tests.cli.conftest import cli_runner
from tests.conftest import BASE

# warm-up ages and counter buckets derive from this clock, never from today's date
T = TypeVar("T")
CLOCK = FixedClock(datetime(2026, 11, 24, 10, 30, tzinfo=UTC))
FIVE_ERRORS = Path(__file__).resolve().parents[1] / "config" / "test_loader.py"


@pytest.fixture
def cli(make_config, tmp_path: Path, capsys):
    make_config({"endpoints": {"out3": {"warmup": {"start": "2026-11-20", "schedule": "standard"}}}})
    return cli_runner(str(tmp_path / "config.yaml"), CLOCK, capsys)


def ttls_seen(rdb: redis.Redis, keys: list[str], call: Callable[[], T]) -> tuple[T, list[set[str]]]:
    """``call()``, and every way it may have shown each key's time left: Redis counts a
    TTL down in real time, which the injected clock does not stop (a run under load once
    showed a 2 h throttle as 1h59m59s left). The TTL read before the call, less the
    seconds the call took (measured), bounds what the call read, whatever it then wrote."""
    before = [rdb.ttl(key) for key in keys]
    started = time.monotonic()
    result = call()
    took = math.ceil(time.monotonic() - started)
    return result, [{format_duration(s) for s in range(max(0, b - took - 1), b + 1)} for b in before]


def ttl_seen(rdb: redis.Redis, key: str, call: Callable[[], T]) -> tuple[T, set[str]]:
    result, [left] = ttls_seen(rdb, [key], call)
    return result, left


def test_check_ok_and_errors(cli, tmp_path: Path, capsys):
    code, out, _ = cli("check")
    assert code == 0 and "OK (3 endpoints, 1 pools, 1 rules)" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "endpoints:\n  out1: {bind_address: 127.0.0.2, colour: blue}\n  out2: {bind_address: not-an-ip}\n"
        "pools:\n  bulk:\n    endpoints:\n      - {endpoint: out1}\n      - {endpoint: out2}\n"
        "      - {endpoint: out9, weight: -1}\nrules:\n  - {name: all, pool: nowhere}\n"
    )
    code = main(["check", "-c", str(bad)])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG and "5 error(s)" in err
    for line in (
        "endpoints.out1.colour: unknown key",
        "pools.bulk.endpoints[2].weight: must be >= 0",
        "pools.bulk.endpoints[2].endpoint: unknown endpoint 'out9'",
        "rules[0].pool: unknown pool 'nowhere'",
        "endpoints.out2.bind_address: not an IP address",
    ):
        assert line in err


def test_state_commands_write_the_documented_keys(cli, rdb: redis.Redis):
    assert cli("weight", "main", "out2", "7")[0] == 0
    assert rdb.hget("{sb}:pool:main:weights", "out2") == "7"
    assert cli("weight", "main", "out2", "--reset")[0] == 0
    assert rdb.hget("{sb}:pool:main:weights", "out2") is None
    assert cli("drain", "out1", "--reason", "maintenance")[0] == 0
    assert rdb.hget("{sb}:endpoint:out1:state", "state") == "drained"
    assert cli("undrain", "out1")[0] == 0
    assert rdb.hget("{sb}:endpoint:out1:state", "state") == "active"
    assert cli("suspend", "out2", "--provider", "google", "--for", "30m", "--reason", "gmail 421")[0] == 0
    assert rdb.get("{sb}:suspend:out2:google") == "gmail 421"
    assert 1790 < rdb.ttl("{sb}:suspend:out2:google") <= 1800
    assert cli("suspend", "out3", "--for", "1h")[0] == 0
    code, out, _ = cli("resume", "out2")
    assert code == 0 and "1 suspension(s) lifted" in out
    assert rdb.exists("{sb}:suspend:out2:google") == 0 and rdb.exists("{sb}:suspend:out3:all") == 1


def test_bad_operator_input_is_a_clear_error(cli):
    code, _, err = cli("weight", "main", "nope", "3")
    assert code == EXIT_USAGE and "not in pool 'main'" in err
    code, _, err = cli("suspend", "out1", "--provider", "gmail")
    assert code == EXIT_USAGE and "unknown provider 'gmail'" in err
    code, _, err = cli("suspend", "out1", "--for", "soon")
    assert code == EXIT_USAGE and "not a duration" in err
    code, _, err = cli("drain", "out9")
    assert code == EXIT_USAGE and "unknown endpoint 'out9'" in err


def test_explain_shows_every_endpoint_and_consumes_nothing(cli, rdb: redis.Redis):
    rdb.hset("{sb}:endpoint:out1:state", mapping={"state": "drained", "reason": "maintenance"})
    rdb.set("{sb}:suspend:out2:google", "rule gmail-421: 421-4.7.28 rate limited", ex=600)
    code, out, _ = cli(
        "explain", "--sender", "a@shop.test", "--rcpt", "bob@gmail.com", "--rcpt", "c@yahoo.com"
    )
    assert code == 0
    assert "recipients=bob@gmail.com,c@yahoo.com providers=google:1,yahoo:1 " in out  # the facts line
    assert "rule:      all" in out and "pool:      main" in out
    assert "drained: maintenance" in out
    assert "rule gmail-421: 421-4.7.28 rate limited" in out
    assert "pick:      out3 -> FILTER out3:" in out
    assert rdb.keys("{sb}:count:*") == []


def test_status_shows_weights_states_suspensions_and_caps(cli, rdb: redis.Redis):
    rdb.hset("{sb}:pool:main:weights", mapping={"out1": "banana", "out2": "9"})
    rdb.set("{sb}:suspend:out2:google", "rule gmail-421: 421-4.7.28", ex=600)
    rdb.set("{sb}:endpoint:out3:state", "junk-of-the-wrong-type")
    code, out, _ = cli("status")
    assert code == 0
    assert "1 (yaml; junk 'banana' ignored)" in out
    assert re.search(r"out2 +google +(10m|9m5\ds) +rule gmail-421: 421-4\.7\.28", out), out
    assert "active (junk state ignored)" in out
    # out3 started 2026-11-20: on the clock's 2026-11-24 it is on day 5 of "standard" (800/day, 100/h)
    assert re.search(r"out3 .* 0/800 +0/100 +day 5$", out, re.M), out


def test_redis_unreachable_is_a_clear_error(cli, redis_server):
    redis_server.stop()
    code, _, err = cli("status")
    assert code == EXIT_REDIS and "Redis at unix://" in err


def test_render_postfix(cli):
    code, out, _ = cli("render", "postfix")
    assert code == 0 and "-o syslog_name=postfix/out2" in out and "smtpd_end_of_data_restrictions" in out


def test_render_exim_writes_every_part_naming_its_own_directory(cli, tmp_path: Path):
    target = tmp_path / "exim"
    code, _, err = cli("render", "exim", "--write", str(target))
    assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["main.conf", "acl.conf", "routers.conf", "transports.conf", "routes"]
    )
    assert f"SB_ROUTES_FILE = {target}/routes\n" in (target / "main.conf").read_text()
    assert "out2: interface=" in (target / "routes").read_text()


def test_render_exim_one_part_to_stdout(cli):
    code, out, _ = cli("render", "exim", "--part", "acl")
    assert code == 0 and out.count("sb_route:") == 1 and "sb_smtp:" not in out


def test_render_options_of_the_other_mta_are_usage_errors(cli, tmp_path: Path):
    for args, says in (
        (("render", "exim", "--part", "master"), "render exim has no part 'master'"),
        (("render", "postfix", "--part", "acl"), "render postfix has no part 'acl'"),
        (("render", "exim", "--write-maps", str(tmp_path)), "--write-maps is for postfix"),
        (("render", "postfix", "--write", str(tmp_path)), "--write is for exim"),
    ):
        code, _, err = cli(*args)
        assert code == EXIT_USAGE and says in err, (args, err)


def test_console_script_installed():
    out = subprocess.run(
        [str(Path(sys.executable).with_name("smtp-balancer")), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "explain" in out.stdout and "render" in out.stdout


def test_control_characters_from_redis_are_escaped_in_status_and_explain(cli, rdb: redis.Redis):
    reason = "evil\x1b[31mRED\nout9      1 (yaml)  active  fake row\x07"
    rdb.set("{sb}:suspend:out2:google", reason, ex=600)
    rdb.hset("{sb}:endpoint:out1:state", mapping={"state": "drained", "reason": "x\r\x9bpwn"})
    for args in (("status",), ("explain", "--sender", "a@shop.test", "--rcpt", "b@gmail.com")):
        code, out, _ = cli(*args)
        assert code == 0
        assert not any(ch in out for ch in "\x1b\x07\r\x9b"), repr(out)
        rows = [line for line in out.splitlines() if line.lstrip().startswith("out9")]
        assert rows == []  # the newline did not draw a row of its own
    _, out, _ = cli("status")
    assert "evil\\x1b[31mRED\\x0aout9" in out


def test_requeue_requests_are_written_and_withdrawn(cli, rdb: redis.Redis):
    code, out, _ = cli("drain", "out2", "--requeue")
    assert code == 0 and "queued mail moves" in out
    assert rdb.hget("{sb}:endpoint:out2:state", "requeue") == "1"
    assert cli("undrain", "out2")[0] == 0  # any later state change withdraws the request
    assert rdb.hget("{sb}:endpoint:out2:state", "requeue") is None
    # the provider positionally, as `suspend out2 google --requeue`
    assert cli("suspend", "out2", "google", "--for", "30m", "--requeue")[0] == 0
    assert rdb.exists("{sb}:suspend:out2:google") and rdb.exists("{sb}:requeue:out2:google")
    assert 0 < rdb.ttl("{sb}:requeue:out2:google") <= 1800
    assert cli("suspend", "out2", "yahoo", "--requeue")[0] == 0
    assert cli("resume", "out2", "--provider", "google")[0] == 0
    assert not rdb.exists("{sb}:requeue:out2:google") and rdb.exists("{sb}:requeue:out2:yahoo")
    assert cli("resume", "out2")[0] == 0
    assert not rdb.keys("{sb}:requeue:*")


def test_status_shows_queued_mail_per_route_when_hosts_report(cli, rdb: redis.Redis):
    assert "queued: unknown" in cli("status")[1]
    rdb.hset("{sb}:queued:mta1", mapping={"out1": 0, "out2": 23, "out3": 1})
    rdb.hset("{sb}:queued:mta2", mapping={"out2": 2, "junk": 5, "out3": "x"})
    out = cli("status")[1]
    assert "queued (deferred messages bound to each endpoint, 2 hosts):\n  out1 0, out2 25, out3 1" in out


def test_status_shows_each_tenant_over_the_last_24_hours(make_config, rdb: redis.Redis, tmp_path, capsys):
    make_config({"tenants": ["shop.test", "news.test"]})
    rdb.hset("{sb}:tenant:shop.test:2026112410", mapping={"sent": 300, "bounced": 4, "complained": 1})
    rdb.hset("{sb}:tenant:shop.test:2026112312", mapping={"sent": 100, "expired": 1, "deferred": 7})
    rdb.hset("{sb}:tenant:shop.test:2026112309", mapping={"sent": 5000})  # 25 h ago: outside
    rdb.hset("{sb}:tenant:other:2026112410", mapping={"sent": "junk", "deferred": 2})
    assert main(["-c", str(tmp_path / "config.yaml"), "status"], clock=CLOCK) == 0
    out = capsys.readouterr().out
    assert "tenants (last 24 h" in out
    assert re.search(r"shop\.test +400 +7 +5 +1 +0\.25%", out), out
    assert re.search(r"news\.test +0 +0 +0 +0 +-", out), out
    assert re.search(r"other +0 +2 +0 +0 +-", out), out


def explain_args(tmp_path: Path) -> list[str]:
    """`explain` of one gmail message, with the config the cli fixture writes."""
    return [
        "-c",
        str(tmp_path / "config.yaml"),
        "explain",
        "--sender",
        "a@shop.test",
        "--rcpt",
        "b@gmail.com",
    ]


def test_explain_names_an_endpoint_left_out_on_this_host(make_config, rdb, tmp_path, capsys):
    make_config({"endpoints": {"out2": {"bind_address": "192.0.2.55"}}})
    args = explain_args(tmp_path)
    assert main(args, clock=CLOCK) == 0
    out = capsys.readouterr().out
    assert "left out:  out2: bind address 192.0.2.55 is not on this host" in out
    assert not re.search(r"main +out2 ", out)  # not a candidate at all


@pytest.mark.parametrize("local", [True, False])
def test_explain_answers_as_the_deciders_do_with_non_utf8_bytes_in_redis(
    make_config, rdb, tmp_path, capsys, local
):
    """A drained reason or a suspension holding byte 0xff: explain crashed into
    'degraded (internal error)' and DUNNO while the daemons routed the same mail."""
    make_config({"decision": {"local": local}})
    rdb.hset("{sb}:endpoint:out1:state", mapping={"state": "drained", "reason": b"maint \xff\xfe"})
    rdb.set("{sb}:suspend:out2:google", b"421 \xff throttled", ex=600)
    args = explain_args(tmp_path)
    assert main(args, clock=CLOCK) == 0
    out = capsys.readouterr().out
    assert "internal error" not in out and "DEGRADED" not in out
    assert "pick:      out3 -> FILTER out3:" in out  # out1 drained, out2 suspended for google
    assert re.search(r"out1 .*no .*drained", out) and re.search(r"out2 .*no .*suspended", out), out


def test_explain_and_render_answer_for_a_fleet_host(make_config, rdb, tmp_path, capsys):
    # one YAML for two hosts: out1 and out2 are mta1's, out3 is mta2's; none of their
    # addresses needs to be on the machine explain runs on
    make_config(
        {
            "endpoints": {
                "out1": {"host": "mta1", "bind_address": "192.0.2.1"},
                "out2": {"host": "mta1.example.com", "bind_address": "192.0.2.2"},
                "out3": {"host": "mta2", "bind_address": "192.0.2.3"},
            }
        }
    )
    path = str(tmp_path / "config.yaml")
    explain = explain_args(tmp_path)
    assert main([*explain, "--host", "mta2.example.com"], clock=CLOCK) == 0
    out = capsys.readouterr().out
    assert "left out:  out1: an endpoint of host mta1, not of mta2.example.com" in out
    assert "left out:  out2: an endpoint of host mta1.example.com, not of mta2.example.com" in out
    assert "pick:      out3 -> FILTER out3:" in out
    assert "bind address" not in out  # this machine's addresses say nothing of mta2
    assert main([*explain, "--host", "mta1.example.com"], clock=CLOCK) == 0
    out = capsys.readouterr().out
    assert "left out:  out3: an endpoint of host mta2" in out and "pick:      out3" not in out
    assert main(["-c", path, "render", "postfix", "--part", "master", "--host", "mta2"]) == 0
    master = capsys.readouterr().out
    assert "\nout3 " in master and "\nout1 " not in master and "\nout2 " not in master
    assert main(["-c", path, "render", "exim", "--part", "routes", "--host", "mta1"]) == 0
    routes = capsys.readouterr().out
    assert "\nout1: " in routes and "\nout2: " in routes and "\nout3: " not in routes


def test_status_shows_provider_caps_rate_caps_and_a_slow(make_config, tmp_path: Path, capsys, rdb):
    make_config(
        {
            "endpoints": {
                "out3": {"warmup": {"start": "2026-11-24", "schedule": [200], "providers": {"google": [30]}}},
                "out2": {"rate_caps": {"google": 60, "all": 500}},
            }
        }
    )
    now_s = int(CLOCK.wall())
    rdb.hset("{sb}:count:out3:day:20261124", mapping={"total": 50, "google": 12})
    rdb.hset("{sb}:ratesec:out2:google", mapping={now_s - 61: 1, now_s - 5: 1, now_s: 1})
    rdb.set("{sb}:slow:out2:google", "0.5 rule slow-421: 421 too fast\x1b[2J", ex=600)
    rdb.set("{sb}:adaptive:out1:yahoo", "0.3 deferred 20% of 50 in 5m", ex=300)
    code, left = ttl_seen(
        rdb,
        "{sb}:slow:out2:google",
        lambda: main(["-c", str(tmp_path / "config.yaml"), "status"], clock=CLOCK),
    )
    out = capsys.readouterr().out
    assert code == 0
    rows = {tuple(line.split()[:2]): line for line in out.splitlines() if line.startswith("  out")}
    assert rows[("out3", "google")].split()[2:5] == ["12/30", "-", "-"], out
    google = rows[("out2", "google")]
    shown = re.search(r"2/60, slowed to 30 \((\S+) left\): rule slow-421: 421 too fast", google)
    assert shown is not None and shown[1] in left, (out, left)
    assert "\x1b" not in out
    assert rows[("out2", "all")].split()[2:5] == ["-", "-", "0/500"], out
    assert " ".join(rows[("out1", "yahoo")].split()[2:]) == "0.3 5m deferred 20% of 50 in 5m", out


def test_status_shows_a_managed_warmups_step_and_why_it_holds(make_config, tmp_path: Path, capsys, rdb):
    warmup = {"start": "2026-11-20", "schedule": [10, 20, 40], "advance": "sending_days"}
    make_config({"endpoints": {"out3": {"warmup": warmup}}})
    rdb.hset(
        "{sb}:warmup:out3",
        mapping={"step": 2, "day": "20261124", "why": "held: sent 4 of its cap 20 on 2026-11-23, under 50%"},
    )
    code = main(["-c", str(tmp_path / "config.yaml"), "status"], clock=CLOCK)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("  out3"))
    # the calendar says day 5; the record says step 2, and why
    assert code == 0 and "0/20" in row and "day 2 (held)" in row, out
    assert "  out3: day 2: held: sent 4 of its cap 20 on 2026-11-23, under 50%" in out


def test_experiment_list_start_stop_and_report(make_config, tmp_path: Path, capsys, rdb):
    arms = [
        {"name": "static", "pool": "main", "split": 50},
        {"name": "adaptive", "pool": "main", "split": 50},
    ]
    orders = [
        {"name": "as-is", "rule_order": ["all"], "split": 50},
        {"name": "shop-first", "rule_order": ["shop", "all"], "split": 50},
    ]
    make_config(
        {
            "rules": [
                {"name": "all", "pool": "main"},
                {"name": "shop", "sender_domain": ["s.t"], "pool": "main"},
            ],
            "experiments": [
                {"name": "ab", "rule": "all", "arms": arms},
                {"name": "order", "match": {"provider": ["google"]}, "arms": orders},
            ],
        }
    )
    path = str(tmp_path / "config.yaml")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["-c", path, "experiment", *args], clock=CLOCK)
        out, err = capsys.readouterr()
        return code, out, err

    listed = run("list")[1]
    assert (
        "ab: never started" in listed and "rule all's messages, by message; static 50% -> pool main" in listed
    )
    assert "order: never started" in listed and "the messages its match selects, by message; " in listed
    assert "shop-first 50% -> rules shop > all" in listed
    assert "shop-first  rules shop > all  50%" in run("report", "order")[1]
    assert run("start", "ab")[0] == 0
    assert rdb.hgetall("{sb}:experiment:ab") == {"state": "running", "started": f"{CLOCK.wall():.0f}"}
    rdb.hset("{sb}:expstats:ab:static", mapping={"decided": 4210, "sent": 4210, "deferred": 202})
    rdb.hset("{sb}:expstats:ab:adaptive", mapping={"decided": 4230, "sent": 4230, "deferred": 88})
    code, out, _ = run("report", "ab")
    assert code == 0 and "experiment ab (running)" in out
    assert "adaptive defers less than static: 2.0% against 4.6%" in out, out
    assert run("stop", "ab")[0] == 0 and rdb.hget("{sb}:experiment:ab", "state") == "stopped"
    assert "ab: stopped (started 2026-11-24 10:30 UTC, stopped 2026-11-24 10:30 UTC)" in run("list")[1]
    code, _, err = run("report", "nope")
    assert code == EXIT_USAGE and "unknown experiment 'nope' (experiments: ab, order)" in err
    assert run("start", "ab", "--reset")[0] == 0 and not rdb.exists("{sb}:expstats:ab:static")
    # a new run: messages decided before it no longer count (the feedback reads since)
    assert rdb.hget("{sb}:experiment:ab", "since") == f"{CLOCK.wall():.0f}"
    assert (
        "ab: running (started 2026-11-24 10:30 UTC, stopped -, counting since 2026-11-24 10:30 UTC)"
        in (run("list")[1])
    )
    # each start and stop is in the audit trail, with the state before it
    audit = [rdb.xrange("{sb}:audit")[i][1] for i in range(3)]
    assert [(e["verb"], e["old"], e["new"], e["reason"]) for e in audit] == [
        ("experiment start", "never started", "running", ""),
        ("experiment stop", "running", "stopped", ""),
        ("experiment start", "stopped", "running", "counts reset"),
    ]

    # explain draws the arm from the envelope; a rule-order arm names the rule that routes
    assert run("stop", "ab")[0] == 0 and run("start", "order")[0] == 0
    assert main(["-c", path, "explain", "--sender", "a@s.t", "--rcpt", "bob@gmail.com"], clock=CLOCK) == 0
    out = capsys.readouterr().out
    arm = re.search(r"arm: +(\S+) of experiment order", out)
    assert arm is not None, out
    assert f"rule:      {'shop' if arm[1] == 'shop-first' else 'all'}\n" in out, out
    # --queue-id: the arm that message gets (the hash of the experiment's name and its id)
    by_arm = {}
    for i in range(100):
        by_arm.setdefault("as-is" if uniform("order", f"Q{i}") < 0.5 else "shop-first", f"Q{i}")
    for name, qid in by_arm.items():
        args = ["-c", path, "explain", "--sender", "a@s.t", "--rcpt", "b@gmail.com", "--queue-id", qid]
        assert main(args, clock=CLOCK) == 0
        assert f"arm:       {name} of experiment order" in capsys.readouterr().out


def test_check_warns_of_one_family_endpoints_on_an_ipv6_host(tmp_path: Path, monkeypatch, capsys):
    from smtp_balancer.cli import show
    from smtp_balancer.engine.plumbing import host_ipv6_addresses

    inet6 = tmp_path / "if_inet6"
    inet6.write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "20010db8000000000000000000000002 02 40 00 80     eth0\n"
        "fe8000000000000000fc00fffe000001 02 40 20 80     eth0\n"
    )
    assert host_ipv6_addresses(str(inet6)) == ["2001:db8::2"]  # global scope only
    assert host_ipv6_addresses(str(tmp_path / "absent")) == []
    config = tmp_path / "dual.yaml"
    config.write_text(
        "endpoints:\n  v4: {bind_address: 192.0.2.1}\n"
        "  both: {bind_address: 192.0.2.2, bind_address6: '2001:db8::2'}\n"
        "pools: {p: {endpoints: [{endpoint: v4}, {endpoint: both}]}}\n"
    )
    monkeypatch.setattr(show, "host_ipv6_addresses", lambda: ["2001:db8::2"])
    assert main(["check", "-c", str(config)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: endpoints.v4: this host has IPv6 (2001:db8::2) and v4 has an IPv4 address only:"
        " it sends over IPv4 alone; give it bind_address6 to send over IPv6 too"
    ]
    monkeypatch.setattr(show, "host_ipv6_addresses", lambda: [])
    assert main(["check", "-c", str(config)]) == 0
    assert capsys.readouterr().err == ""


def test_resume_takes_the_provider_as_suspend_does_and_unsuspend_is_resume(cli, rdb: redis.Redis):
    assert cli("suspend", "out2", "google", "--for", "1h")[0] == 0
    assert cli("suspend", "out2", "yahoo", "--for", "1h")[0] == 0
    code, out, _ = cli("resume", "out2", "google")
    assert code == 0 and "1 suspension(s) for google lifted" in out
    assert not rdb.exists("{sb}:suspend:out2:google") and rdb.exists("{sb}:suspend:out2:yahoo")
    code, out, _ = cli("unsuspend", "out2", "--provider", "yahoo")
    assert code == 0 and not rdb.exists("{sb}:suspend:out2:yahoo")


def test_for_needs_a_unit(cli, rdb: redis.Redis):
    code, _, err = cli("suspend", "out2", "google", "--for", "90")
    assert code == EXIT_USAGE and "give a unit: '90' could be seconds or minutes (e.g. 90s or 90m)" in err
    assert not rdb.exists("{sb}:suspend:out2:google")
    code, out, _ = cli("suspend", "out2", "google", "--for", "90m")
    assert code == 0 and "for google for 1h30m" in out


def test_a_shorter_suspension_replaces_a_longer_one_only_with_force(cli, rdb: redis.Redis):
    """`--for 90` silently replaced a 2 h suspension while the --requeue marker kept its
    2 h: now the operator is told what stands, and a replacement ends the marker too."""
    assert cli("suspend", "out2", "google", "--for", "2h", "--reason", "421s", "--requeue")[0] == 0
    key = "{sb}:suspend:out2:google"
    (code, _, err), left = ttl_seen(rdb, key, lambda: cli("suspend", "out2", "google", "--for", "90s"))
    assert code == EXIT_USAGE
    stands = r"out2 is already suspended for google \((\S+) left, '421s'\): --for 90s would shorten it"
    shown = re.search(stands, err)
    assert shown is not None and shown[1] in left, (err, left)
    assert "add --force" in err and rdb.ttl(key) > 7000
    (code, out, _), left = ttl_seen(
        rdb, key, lambda: cli("suspend", "out2", "google", "--for", "90s", "--force")
    )
    shown = re.search(r"replaces the suspension of (\S+) left, '421s'", out)
    assert code == 0 and shown is not None and shown[1] in left, (out, left)
    assert 0 < rdb.ttl(key) <= 90
    assert 0 < rdb.ttl("{sb}:requeue:out2:google") <= 90  # moves no mail after the endpoint is back
    # longer: no --force needed
    (code, out, _), left = ttl_seen(rdb, key, lambda: cli("suspend", "out2", "google", "--for", "3h"))
    shown = re.search(r"replaces the suspension of (\S+) left", out)
    assert code == 0 and shown is not None and shown[1] in left, (out, left)


def test_draining_again_keeps_the_reason_unless_given(cli, rdb: redis.Redis):
    assert cli("drain", "out1", "--reason", "disk swap")[0] == 0
    code, out, _ = cli("drain", "out1", "--requeue")
    assert code == 0 and "drained (disk swap)" in out
    assert rdb.hget("{sb}:endpoint:out1:state", "reason") == "disk swap"
    assert cli("drain", "out1", "--reason", "new cause")[0] == 0
    assert rdb.hget("{sb}:endpoint:out1:state", "reason") == "new cause"
    assert cli("drain", "out2")[1] == "endpoint out2: drained (drained by operator)\n"


def test_a_reason_s_control_characters_are_escaped_when_echoed(cli):
    code, out, _ = cli("suspend", "out2", "google", "--for", "1h", "--reason", "\x1b[2J\x1b[31mred")
    assert code == 0 and "\x1b" not in out and "(\\x1b[2J\\x1b[31mred)" in out
    code, out, _ = cli("drain", "out1", "--reason", "line\nfake row")
    assert code == 0 and "\n" not in out.rstrip("\n") and "line\\x0afake row" in out


def test_version_and_usage_errors_have_their_own_exit_code(capsys):
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and re.fullmatch(r"smtp-balancer \S+\n", capsys.readouterr().out)
    with pytest.raises(SystemExit) as usage:
        main(["resume", "--for", "1h"])  # not an option of resume
    assert usage.value.code == EXIT_USAGE != EXIT_CONFIG
    assert "unrecognized arguments: --for" in capsys.readouterr().err


def test_every_write_is_in_the_audit_trail_and_status_shows_the_last_per_endpoint(
    cli, rdb: redis.Redis, monkeypatch
):
    monkeypatch.setenv("SUDO_USER", "alice")
    writes = [
        ("weight", "main", "out2", "5"),
        ("weight", "main", "out2", "--reset"),
        ("drain", "out1", "--reason", "disk swap"),
        ("undrain", "out1"),
        ("suspend", "out2", "google", "--for", "2h", "--reason", "421s"),
        ("resume", "out2", "google"),
    ]  # experiment start and stop: test_experiment_list_start_stop_and_report
    for args in writes:
        assert cli(*args)[0] == 0, args
    code, out, _ = cli("audit", "--json")
    entries = json.loads(out)
    assert [(e["verb"], e["target"]) for e in entries] == [
        ("weight", "main/out2"),
        ("weight", "main/out2"),
        ("drain", "out1"),
        ("undrain", "out1"),
        ("suspend", "out2/google"),
        ("resume", "out2/google"),
    ]
    assert [(e["old"], e["new"]) for e in entries] == [
        ("yaml", "5"),
        ("5", "yaml"),
        ("active", "drained"),
        ("drained: disk swap", "active"),
        ("none", "2h"),
        ("1 suspension(s)", "none"),
    ]
    assert entries[2]["reason"] == "disk swap" and entries[4]["reason"] == "421s"
    assert all(e["sudo"] == "alice" and e["who"] and e["at"] == CLOCK.wall() for e in entries)
    code, out, _ = cli("audit")
    assert code == 0 and len(out.splitlines()) == len(writes)
    assert "(sudo from alice): drain out1: active -> drained: 'disk swap'" in out
    code, out, _ = cli("status")
    last = out[out.index("last change per endpoint") :]
    assert re.search(r"out1 .*undrain out1: drained: disk swap -> active", last), last
    assert re.search(r"out2 .*resume out2/google", last), last


def _commands() -> dict[str, argparse.ArgumentParser]:
    from smtp_balancer.cli.parser import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_s_help_has_an_example_and_the_exit_codes():
    for name, parser in _commands().items():
        text = parser.format_help()
        assert "\nexample:\n  " in text and "smtp-balancer" in text.split("example:")[1], name
        assert "exit codes: 0 ok" in text, name


def test_the_cli_reference_lists_every_command_and_flag():
    text = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md").read_text()
    section = text[text.index("# CLI\n") :]
    start = section.index("```\n") + 4
    block = section[start : section.index("```", start)]
    listed: set[str] = set()
    for line in block.splitlines():
        if line.startswith("smtp-balancer "):
            words = line.split()[1:]
            listed |= set(words[0].split("|"))
            if words[0] == "policyd":  # "policyd | milter | feedback | table"
                listed |= {w for w in words[: words.index("#")] if w != "|"}
    for name, parser in _commands().items():
        assert name in listed or f"or {name}" in block, name
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help", "--config"):
                    assert flag in block, (name, flag)


def test_bash_completes_commands_and_flags_from_the_generated_script(tmp_path: Path, capsys):
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "smtp-balancer.bash"
    script.write_text(capsys.readouterr().out)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1};"
            f' COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; _shtab_smtp_balancer; echo "${{COMPREPLY[@]}}"'
        )
        out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert complete("smtp-balancer", "sus") == ["suspend"]
    assert sorted(complete("smtp-balancer", "un")) == ["undrain", "unslow", "unsuspend", "unthrottle"]
    assert complete("smtp-balancer", "suspend", "out2", "--f") == ["--for", "--force"]
    assert complete("smtp-balancer", "render", "e") == ["exim"]


def test_status_json_follows_its_schema_with_every_kind_of_state(cli, rdb: redis.Redis):
    import jsonschema

    from smtp_balancer.cli import main as cli_main

    schema = json.loads((Path(cli_main.__file__).with_name("status.schema.json")).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert cli("drain", "out1", "--reason", "disk \x1b[31mswap")[0] == 0
    assert cli("suspend", "out2", "google", "--for", "2h", "--reason", "421s")[0] == 0
    assert cli("weight", "main", "out3", "7")[0] == 0
    rdb.hset(f"{{sb}}:count:out3:day:{utc_now(CLOCK):%Y%m%d}", "total", "junk")
    rdb.set("{sb}:adaptive:out2:google", "0.5 deferrals", ex=600)
    code, out, _ = cli("status", "--json")
    assert code == 0 and "\x1b" not in out  # JSON escapes what a terminal would run
    status = json.loads(out)
    jsonschema.validate(status, schema, format_checker=jsonschema.FormatChecker())
    assert status["endpoints"]["out1"]["state"] == "drained"
    assert status["endpoints"]["out1"]["reason"] == "disk \x1b[31mswap"
    assert status["endpoints"]["out2"]["suspensions"] == [
        {"provider": "google", "ttl_s": 7200, "reason": "421s"}
    ]
    assert status["endpoints"]["out3"]["day_count"] is None  # junk
    members = {m["endpoint"]: m for m in status["pools"][0]["members"]}
    assert members["out3"]["weight"] == members["out3"]["live_weight"] == 7
    assert status["adaptive"][0]["factor"] == 0.5
    assert status["last_change"]["out3"]["verb"] == "weight"
    # the schema is strict: a field it does not describe is an error
    status["endpoints"]["out1"]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(status, schema)


def test_selectors_change_many_endpoints_at_once(make_config, tmp_path: Path, capsys, rdb: redis.Redis):
    make_config(
        {
            "endpoints": {
                "out1": {"host": "mta1", "tags": ["bulk"]},
                "out2": {"host": "mta1", "tags": ["bulk", "eu"]},
                "out3": {"host": "mta2.example.com", "tags": ["eu"]},
            }
        }
    )
    path = str(tmp_path / "config.yaml")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["-c", path, *args], clock=CLOCK)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("drain", "--tag", "bulk", "--reason", "ip swap")
    assert code == 0 and out.endswith("2 endpoints drained: out1, out2\n")
    assert [rdb.hget(f"{{sb}}:endpoint:{ep}:state", "state") for ep in ("out1", "out2", "out3")] == [
        "drained",
        "drained",
        None,
    ]
    code, out, _ = run("undrain", "--host", "mta1")
    assert code == 0 and "2 endpoints active: out1, out2" in out
    code, out, _ = run("suspend", "--tag", "eu", "--host", "mta2", "microsoft", "--for", "30m")  # both: out3
    assert code == 0 and out == "endpoint out3: suspended for microsoft for 30m (suspended by operator)\n"
    code, out, _ = run("suspend", "--all", "microsoft", "--for", "10m")  # would shorten out3's: none changes
    assert code == EXIT_USAGE and not rdb.exists("{sb}:suspend:out1:microsoft")
    code, out, _ = run("resume", "--pool", "main", "microsoft")
    assert (
        code == 0
        and "3 endpoints resumed for microsoft" in out
        and not rdb.exists("{sb}:suspend:out3:microsoft")
    )
    code, _, err = run("drain", "--tag", "nope")
    assert code == EXIT_USAGE and "no endpoint is selected by --tag nope (tags in the YAML: bulk, eu)" in err
    code, _, err = run("drain", "out1", "--all")
    assert code == EXIT_USAGE and "name an endpoint or select some, not both" in err
    code, _, err = run("drain")
    assert code == EXIT_USAGE and "name an endpoint, or select some" in err
    entries = rdb.xrange("{sb}:audit")
    assert len(entries) == 2 + 2 + 1 + 3  # one entry per endpoint changed


def test_throttle_slow_quarantine_and_their_lists(cli, rdb: redis.Redis):
    code, out, _ = cli(
        "throttle", "out2", "--provider", "microsoft", "--factor", "0.5", "--for", "2h", "--reason", "S3150"
    )
    assert code == 0 and out == "endpoint out2: throttle 0.5 for microsoft for 2h (S3150)\n"
    assert (
        rdb.get("{sb}:throttle:out2:microsoft") == "0.5 S3150"
        and rdb.ttl("{sb}:throttle:out2:microsoft") > 7000
    )
    code, _, err = cli("throttle", "out2", "--provider", "microsoft", "--factor", "1.5", "--for", "2h")
    assert code == EXIT_USAGE and "strictly between 0 and 1, not 1.5" in err
    code, _, err = cli("slow", "out3", "--provider", "gmail", "--factor", "0.5")
    assert code == EXIT_USAGE and "unknown provider 'gmail'" in err
    assert cli("slow", "--all", "--provider", "google", "--factor", "0.25", "--for", "30m")[0] == 0
    rdb.set("{sb}:throttle:out1:yahoo", "lots junk", ex=60)  # hand-edited: shown as ignored
    keys = ["{sb}:throttle:out1:yahoo", "{sb}:throttle:out2:microsoft"]
    (code, out, _), (junk_left, left) = ttls_seen(rdb, keys, lambda: cli("list", "throttles"))
    lines = out.splitlines()
    junk = re.fullmatch(r"out1 yahoo: junk \(ignored\) (\S+) left: junk", lines[0])
    throttle = re.fullmatch(r"out2 microsoft: 0\.5 (\S+) left: S3150", lines[1])
    assert code == 0 and len(lines) == 2 and junk and throttle, out
    assert throttle[1] in left and junk[1] in junk_left, (out, left)
    code, out, _ = cli("list", "slows", "--json")
    slows = json.loads(out)
    assert [(s["endpoint"], s["provider"], s["factor"]) for s in slows] == [
        ("out1", "google", 0.25),
        ("out2", "google", 0.25),
        ("out3", "google", 0.25),
    ]
    code, out, _ = cli("unthrottle", "out2", "microsoft")
    assert (
        code == 0
        and "1 throttle(s) for microsoft lifted" in out
        and not rdb.exists("{sb}:throttle:out2:microsoft")
    )
    code, out, _ = cli("unslow", "--all")
    assert code == 0 and "3 endpoints unslow" in out and cli("list", "slows")[1] == "no slows\n"
    code, out, _ = cli("quarantine", "out3", "--for", "6h", "--reason", "listed by hand")
    assert code == 0 and "endpoint out3: quarantined for 6h (listed by hand)" in out
    assert rdb.hget("{sb}:endpoint:out3:state", "until") == str(int(CLOCK.wall()) + 6 * 3600)
    code, out, _ = cli("list", "quarantines", "--json")
    assert json.loads(out) == [
        {"endpoint": "out3", "reason": "listed by hand", "until": str(int(CLOCK.wall()) + 21600)}
    ]
    assert cli("suspend", "out1", "yahoo", "--for", "1h")[0] == 0
    (_, out, _), left = ttl_seen(rdb, "{sb}:suspend:out1:yahoo", lambda: cli("list", "suspensions"))
    shown = re.search(r"out1 yahoo: (\S+) left: suspended by operator", out)
    assert shown is not None and shown[1] in left, (out, left)
    verbs = [e[1]["verb"] for e in rdb.xrange("{sb}:audit")]
    assert verbs == [
        "throttle",
        "slow",
        "slow",
        "slow",
        "unthrottle",
        "unslow",
        "unslow",
        "unslow",
        "quarantine",
        "suspend",
    ]


def test_status_shows_every_state_in_rows_that_fit_100_columns_and_filters(cli, rdb: redis.Redis):
    long = "maintenance of the upstream switch in rack 7, ticket OPS-4411, back after the reboot"
    assert cli("drain", "out1", "--reason", long, "--requeue")[0] == 0
    for provider in ("google", "microsoft", "yahoo"):
        assert (
            cli("suspend", "out2", provider, "--for", "2h", "--reason", f"421 from {provider}: " + long)[0]
            == 0
        )
    assert cli("throttle", "out3", "--provider", "google", "--factor", "0.5", "--reason", "S3150")[0] == 0
    assert cli("quarantine", "out3", "--for", "6h", "--reason", "listed")[0] == 0
    code, out, _ = cli("status")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 100, out
    assert re.search(
        r"^  out1 +drained \(requeue\) +cli +0s ago +at undrain +maintenance of the upstream s", out, re.M
    )
    assert re.search(r"^  out3 +quarantined +cli +0s ago +in 6h +listed$", out, re.M), out
    assert len(re.findall(r"^  out2 +(google|microsoft|yahoo) +2h +421 from", out, re.M)) == 3
    assert re.search(r"^  out3 +google +0\.5 +1h +S3150$", out, re.M), out
    code, out, _ = cli("status", "--endpoint", "out2", "--provider", "microsoft")
    shown = out[: out.index("last change per endpoint")]  # that one is the endpoint's, any provider
    assert code == 0 and "out1" not in out and "out3" not in out
    assert "microsoft" in shown and "google" not in shown and "yahoo" not in shown, shown
    code, _, err = cli("status", "--provider", "gmail")
    assert code == EXIT_USAGE and "unknown provider 'gmail'" in err


def test_every_json_output_follows_its_schema(cli, rdb: redis.Redis):
    """audit --json and list --json, beside status --json's own test: each against the
    JSON Schema kept beside the CLI, strict about fields it does not describe."""
    import jsonschema

    from smtp_balancer.cli import main as cli_main

    def schema(name: str) -> dict:
        loaded = json.loads(Path(cli_main.__file__).with_name(f"{name}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(loaded)
        return loaded

    assert cli("suspend", "out2", "google", "--for", "1h", "--reason", "421s")[0] == 0
    assert cli("throttle", "out1", "--provider", "yahoo", "--factor", "0.3")[0] == 0
    assert cli("quarantine", "out3")[0] == 0
    rdb.set("{sb}:slow:out1:google", "nope", ex=60)  # junk: factor null
    audit = json.loads(cli("audit", "--json")[1])
    assert len(audit) == 3
    jsonschema.validate(audit, schema("audit"))
    for what in ("suspensions", "throttles", "slows", "adaptive", "quarantines"):
        listed = json.loads(cli("list", what, "--json")[1])
        jsonschema.validate(listed, schema("list"))
        assert listed or what == "adaptive", what
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{**audit[0], "extra": 1}], schema("audit"))


def test_warmup_show_set_hold_release(make_config, tmp_path: Path, capsys, rdb: redis.Redis):
    today = utc_now(CLOCK).date()
    warm = {"start": (today - timedelta(days=4)).isoformat(), "schedule": [10, 20, 40, 80, 160, 320]}
    make_config(
        {
            "endpoints": {
                "out2": {"warmup": warm},  # by the calendar: day 5 on the clock's today
                "out3": {"warmup": {**warm, "advance": "sending_days"}},
            }
        }
    )
    path = str(tmp_path / "config.yaml")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["-c", path, "warmup", *args], clock=CLOCK)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("show")
    assert code == 0 and "out2: step 5 (calendar), cap 160/day" in out
    code, out, _ = run("set", "out3", "--step", "4")
    assert code == 0 and rdb.hgetall("{sb}:warmup:out3") == {
        "step": "4",
        "day": f"{today:%Y%m%d}",
        "why": "set to step 4 by an operator",
    }
    code, out, _ = run("show", "out3", "--json")
    (shown,) = json.loads(out)
    assert (shown["step"], shown["day_cap"], shown["advance"], shown["held"]) == (4, 80, "managed", False)
    assert run("hold", "out3")[0] == 0 and rdb.hget("{sb}:warmup:out3", "hold") == "1"
    assert "out3: step 4 (managed, held), cap 80/day" in run("show")[1]
    assert run("release", "out3")[0] == 0 and rdb.hget("{sb}:warmup:out3", "hold") is None
    code, _, err = run("set", "out2", "--step", "2")
    assert code == EXIT_USAGE and "out2's warm-up advances by the calendar" in err
    code, _, err = run("hold", "out1")
    assert code == EXIT_USAGE and "out1 has no warm-up" in err
    verbs = [e[1]["verb"] for e in rdb.xrange("{sb}:audit")]
    assert verbs == ["warmup set", "warmup hold", "warmup release"]


def test_a_postfix_configuration_postconf_cannot_read_exits_6(cli, tmp_path: Path):
    from smtp_balancer.cli.common import EXIT_POSTFIX

    code, out, err = cli(
        "render", "postfix", "--postconf", "--postfix-dir", str(tmp_path / "no-postfix-here")
    )
    assert code == EXIT_POSTFIX == 6 and out == ""
    assert f"`postconf -c {tmp_path / 'no-postfix-here'} -M` failed" in err and "No such file" in err


def test_a_reader_that_went_away_gets_no_traceback(cli, tmp_path: Path):
    """`smtp-balancer status | head -1`: the pipe's reader closes before the CLI is done."""
    from integration.daemons import CLI

    read, write = os.pipe()
    os.close(read)  # gone before the first write: every write fails with EPIPE
    try:
        done = subprocess.run(
            [CLI, "-c", str(tmp_path / "config.yaml"), "status"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize(
    "command",
    [["render", "postfix", "--part", "master"], ["render", "exim", "--part", "routers"], ["--help"]],
    ids=["render-postfix", "render-exim", "help"],
)
def test_commands_that_need_no_redis_start_without_its_client(tmp_path: Path, command: list[str]):
    """Each command imports what it runs (cli/parser.py's Command): rendering a config
    or printing help loads neither Redis's client, nor the engine, nor Prometheus's
    client, which together made over half of every start."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**BASE, "redis": {"url": "redis://127.0.0.1:1"}}))
    probe = (
        "import contextlib, io, sys\n"
        "from smtp_balancer.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({['-c', str(config), *command]!r})\n"
        "heavy = ('redis', 'prometheus_client', 'smtp_balancer.engine')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
