"""Issue #4 acceptance: the milter routes by message class through real Postfix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections import Counter
from pathlib import Path

import yaml

from integration.configs import BULK_HEADERS, CLASS_POOLS, ENDPOINT_IP, deep_merge
from integration.daemons import BaselineProcess, decision_lines, unix_ready
from integration.sink import free_port
from integration.waits import MAIL_S, wait_until
from integration.workloads import assert_counted_exactly, counted_today
from smtp_balancer.clock import utc_now

BULK = BULK_HEADERS
TX_IPS = {ENDPOINT_IP["out1"]}
BULK_IPS = {ENDPOINT_IP["out2"], ENDPOINT_IP["out3"]}


def kind(i: int) -> str:
    return "bulk" if i % 2 else "transactional"


def test_classes_route_to_their_pools_over_500_messages(mail_system):
    ms = mail_system(CLASS_POOLS, policy=False, milter=True)
    errors = ms.send_many(500, tag=kind, headers=lambda i: BULK if kind(i) == "bulk" else {})
    assert errors == []
    got = ms.sink.wait_for(500, timeout=120)
    for m in got:
        expected = BULK_IPS if m.header("X-Test-Tag") == "bulk" else TX_IPS
        assert m.peer_ip in expected, (m.header("X-Test-Tag"), m.peer_ip)
        assert m.header("X-Egress-Route") is None  # stripped on the way out
    assert Counter(m.peer_ip for m in got if m.header("X-Test-Tag") == "bulk").keys() == BULK_IPS


def test_socket_is_0660_group_postfix_and_postfix_still_connects(mail_system):
    import grp
    import stat

    ms = mail_system(CLASS_POOLS, policy=False, milter=True)
    listen = yaml.safe_load(ms.config_path.read_text())["milter"]["listen"]
    st = os.stat(listen.removeprefix("unix:"))
    assert stat.S_IMODE(st.st_mode) == 0o660  # not 0666: no other local user may talk to it
    assert grp.getgrgid(st.st_gid).gr_name == "postfix"
    ms.send("app@shop.test", ["someone@example.test"], headers=BULK)
    assert ms.sink.wait_for(1, timeout=MAIL_S)[0].peer_ip in BULK_IPS  # cleanup, as postfix, connected


def test_sendmail_submissions_are_routed(mail_system):
    ms = mail_system(CLASS_POOLS, policy=False, milter=True)
    for i in range(6):
        ms.sendmail("app@shop.test", [f"user{i}@example.test"], seq=i, headers=BULK if i % 2 else {})
    got = ms.sink.wait_for(6, timeout=MAIL_S)
    for m in got:
        expected = BULK_IPS if int(m.header("X-Test-Seq")) % 2 else TX_IPS
        assert m.peer_ip in expected
        assert m.header("X-Egress-Route") is None


def test_a_client_supplied_route_header_changes_nothing(mail_system):
    ms = mail_system(CLASS_POOLS, policy=False, milter=True)
    spoof = {**BULK, "X-Egress-Route": "out1", "X-Mail-Class": "transactional"}
    # from 127.0.0.1, a trusted network: the class header counts, the route header never does
    for i in range(20):
        ms.send(
            "spammer@shop.test", [f"u{i}@example.test"], seq=i, headers={**BULK, "X-Egress-Route": "out1"}
        )
    got = ms.sink.wait_for(20, timeout=MAIL_S)
    assert {m.peer_ip for m in got} <= BULK_IPS
    assert all(m.header("X-Egress-Route") is None for m in got)
    ms.send("app@shop.test", ["v@example.test"], seq=99, headers=spoof)
    last = ms.sink.wait_for(21, timeout=MAIL_S)[-1]
    assert last.peer_ip in TX_IPS and last.header("X-Egress-Route") is None
    assert "spoofed" not in ms.postfix.log_text()  # nothing odd for Postfix to complain about


def test_milter_killed_mid_run_mail_still_flows(mail_system):
    ms = mail_system(CLASS_POOLS, policy=False, milter=True)
    kill = lambda i: ms.milter.kill() if i == 60 else None  # noqa: E731  (mid-run)
    headers = lambda i: BULK if kind(i) == "bulk" else {}  # noqa: E731
    assert ms.send_many(200, threads=4, tag=kind, headers=headers, before=kill) == []
    ms.sink.wait_for(200, timeout=120)
    ms.send_many(20, threads=2, start=1000)
    later = ms.sink.wait_for(220, timeout=MAIL_S)
    after_kill = [m for m in later if int(m.header("X-Test-Seq")) >= 1000]
    assert {m.peer_ip for m in after_kill} == {"127.0.0.1"}  # Postfix's default transport


def _second_message_during_a_redis_stall(ms):
    """One normal message, then one sent while Redis is stopped (SIGSTOP: it takes requests
    and answers none until continued); the second as the sink got it."""
    ms.send("app@shop.test", ["warm@example.test"], seq=0)
    assert ms.sink.wait_for(1, timeout=MAIL_S)[0].peer_ip in TX_IPS
    with ms.redis.stopped():
        ms.send("app@shop.test", ["slow@example.test"], seq=1)  # returns once Postfix took it
    return ms.sink.wait_for(2, timeout=MAIL_S)[-1]


def test_engine_timeout_delivers_without_route_header(mail_system):
    # the engine's budget is longer than the milter will wait: the milter gives up first.
    # Local decisions would not wait on the stalled Redis at all (the next test), so this
    # one turns them off to reach the round trip that times out.
    ms = mail_system(
        {
            **CLASS_POOLS,
            "decision": {"budget_ms": 5000, "local": False},
            "milter": {"decision_timeout_ms": 200},
        },
        policy=False,
        milter=True,
    )
    got = _second_message_during_a_redis_stall(ms)
    assert got.peer_ip == "127.0.0.1" and got.header("X-Egress-Route") is None
    metrics_port = yaml_port(ms)
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith('smtp_balancer_degraded_decisions_total{reason="bridge_timeout"}')
    )
    assert float(line.split()[-1]) >= 1


def test_a_stalled_redis_does_not_stall_local_decisions(mail_system):
    ms = mail_system(
        {**CLASS_POOLS, "decision": {"budget_ms": 5000}, "milter": {"decision_timeout_ms": 200}},
        policy=False,
        milter=True,
    )
    got = _second_message_during_a_redis_stall(ms)
    assert got.peer_ip in TX_IPS  # routed from the mirror while Redis slept


def yaml_port(ms) -> int:
    import yaml

    return int(yaml.safe_load(ms.config_path.read_text())["milter"]["metrics_listen"].rsplit(":", 1)[1])


def test_info_header_and_json_log_line_share_the_decision_id(mail_system):
    """The optional info header (kept in the queue file, stripped on the way out)
    and the milter's JSON decision line name the same decision."""
    ms = mail_system(
        {**CLASS_POOLS, "milter": {"info_header": "X-Egress-Info"}},
        policy=False,
        milter=True,
        log_format="json",
    )
    # every route refuses for now, so the message waits in the queue where we can read it
    for ip in ENDPOINT_IP.values():
        ms.sink.script(ip, "*", "451 4.3.0 held for the test")
    ms.send("app@shop.test", ["bob@example1.test"], headers=BULK)
    (line,) = wait_until(lambda: decision_lines(ms.base / "milter.log"), timeout=30, what="a decision line")
    assert line["via"] == "milter" and line["message_class"] == "bulk" and line["pool"] == "bulk"
    wait_until(lambda: "status=deferred" in ms.postfix.log_text(), timeout=30, what="the deferral")
    headers = subprocess.run(
        ["postcat", "-c", str(ms.postfix.config_dir), "-h", "-q", line["queue_id"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info = re.search(r"^X-Egress-Info: (.*)$", headers, re.M)
    assert info is not None, headers
    assert info.group(1).startswith(f"id={line['decision_id']}; pool=bulk; rule=bulk; class=bulk")
    assert re.search(rf"^X-Egress-Route: {line['endpoint']}$", headers, re.M), headers


def test_with_both_daemons_each_message_is_decided_once(mail_system):
    """The rendered main.cf keeps the milter off SMTP mail while the policy daemon
    decides it: a message decided twice would reserve its warm-up quota twice."""
    ms = mail_system(milter=True)  # the policy daemon too, as by default
    assert ms.send_many(20, threads=2) == []
    for i in range(10):
        ms.sendmail("app@shop.test", [f"local{i}@example{i % 5}.test"], 100 + i)
    got = ms.sink.wait_for(30, timeout=MAIL_S)
    assert {m.peer_ip for m in got} <= set(ENDPOINT_IP.values())  # every message routed
    # a message decided twice would count 31 or more
    assert_counted_exactly(ms.rdb, ENDPOINT_IP, 30, [ms.policyd, ms.milter])


def test_a_stopped_milter_gives_its_quota_leases_back(mail_system):
    """SIGTERM stops the milter through its main thread, which sets libmilter's stop
    flag: its quota leases go back and its last counts are written. Before, another of
    its threads (the log writer's, the engine's) could take the signal and end the
    process at once, leaving every leased unit counted as used."""
    today = utc_now().date().isoformat()
    warm = {"endpoints": {ep: {"warmup": {"start": today, "schedule": [1000]}} for ep in ENDPOINT_IP}}
    ms = mail_system(warm, milter=True, policy=False)
    for i in range(10):
        ms.sendmail("app@shop.test", [f"local{i}@example{i % 5}.test"], 200 + i)
    got = ms.sink.wait_for(10, timeout=MAIL_S)
    assert {m.peer_ip for m in got} <= set(ENDPOINT_IP.values())
    assert counted_today(ms.rdb, ENDPOINT_IP) > 10  # leased ahead, as local decisions do
    assert_counted_exactly(ms.rdb, ENDPOINT_IP, 10, [ms.milter])
    log = ms.milter.log_path.read_text()
    assert "milter stopping on SIGTERM" in log
    assert "milter stopping: giving leases back" in log


def test_the_feedback_id_is_ours_alone_whatever_the_message_carried(mail_system):
    """Gmail's feedback loop reports complaints by Feedback-ID: a sender's own copy must not
    survive, or its complaints could count under another tenant (issue #38)."""
    stamp = {"milter": {"feedback_id": {"enabled": True, "sender_id": "esp1"}}, "tenants": ["shop.test"]}
    ms = mail_system(deep_merge(CLASS_POOLS, stamp), policy=False, milter=True)
    forged = {**BULK, "Feedback-ID": "spring:news.test:bulk:esp1"}
    ms.send("app@shop.test", ["u1@example.test"], seq=1, headers=forged)
    ms.send(
        "app@elsewhere.test",
        ["u2@example.test"],
        seq=2,
        headers={"Feedback-ID": "a:b:c:d", "feedback-id": "e:f:g:h"},
    )
    ms.send("app@mail.shop.test", ["u3@example.test"], seq=3)
    got = {int(m.header("X-Test-Seq")): m for m in ms.sink.wait_for(3, timeout=MAIL_S)}
    stamped = {seq: [v for k, v in m.headers if k.lower() == "feedback-id"] for seq, m in got.items()}
    assert stamped == {
        1: ["bulk:shop.test:bulk:esp1"],  # rule bulk, tenant shop.test, class bulk
        2: ["transactional:other:transactional:esp1"],
        3: ["transactional:shop.test:transactional:esp1"],  # a subdomain is its tenant's
    }


def test_a_signer_after_ours_in_smtpd_milters_sees_our_feedback_id_only(mail_system, tmp_path):
    """What docs/milter.md says of the milter chain: Postfix gives a later milter the
    message as ours left it, so a DKIM signer listed after ours signs our Feedback-ID,
    and never the sender's copy."""
    stamp = {"milter": {"feedback_id": {"enabled": True, "sender_id": "esp1"}}, "tenants": ["shop.test"]}
    ms = mail_system(deep_merge(CLASS_POOLS, stamp), policy=False, milter=True)
    socket, record = ms.base / "recorder.sock", tmp_path / "headers.jsonl"
    recorder = BaselineProcess(
        Path(__file__).with_name("header_milter.py"),
        [f"unix:{socket}", str(record)],
        ms.base / "recorder.log",
        unix_ready(socket),
    )
    recorder.start()
    try:
        config_dir = str(ms.postfix.config_dir)
        ours = subprocess.run(
            ["postconf", "-c", config_dir, "-h", "smtpd_milters"], capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run(
            ["postconf", "-c", config_dir, "-e", f"smtpd_milters = {ours}, unix:{socket}"], check=True
        )
        before = ms.postfix.smtpd_processes()
        ms.postfix.reload()  # (start would write main.cf afresh): smtpd processes of the old config leave
        wait_until(lambda: not before & ms.postfix.smtpd_processes(), 30, "the old smtpd processes to exit")
        ms.send(
            "app@shop.test",
            ["u1@example.test"],
            seq=1,
            headers={**BULK, "Feedback-ID": "spring:news.test:bulk:esp1"},
        )
        (got,) = ms.sink.wait_for(1, timeout=MAIL_S)
        wait_until(lambda: record.exists() and record.read_text().strip(), 30, "the recorder's record")
        seen = json.loads(record.read_text().splitlines()[0])
    finally:
        recorder.stop()
    assert [v for k, v in seen if k.lower() == "feedback-id"] == ["bulk:shop.test:bulk:esp1"]
    assert [v for k, v in got.headers if k.lower() == "feedback-id"] == ["bulk:shop.test:bulk:esp1"]


def test_a_milter_on_ipv6_loopback_is_reached_by_postfix_and_routes(mail_system):
    """milter.listen inet:[::1]:port: libmilter listens on IPv6 only when told inet6
    (its inet is IPv4: before, the milter refused to start, "cannot opensocket"), and
    Postfix reaches it by the address as rendered."""
    listen = f"inet:[::1]:{free_port('::1')}"
    ipv6_milter = deep_merge(CLASS_POOLS, {"milter": {"listen": listen}})
    ms = mail_system(ipv6_milter, policy=False, milter=True, dual_stack="::1")
    ms.send("app@shop.test", ["a@example.test"], seq=1, headers=BULK)
    ms.send("app@shop.test", ["b@example.test"], seq=2)
    got = {int(m.header("X-Test-Seq")): m.peer_ip for m in ms.sink.wait_for(2, timeout=MAIL_S)}
    assert got[1] in BULK_IPS and got[2] in TX_IPS, got
    assert f"milter listening on inet6:{listen.rpartition(':')[2]}@::1" in ms.milter.log_path.read_text()
