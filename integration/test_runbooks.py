"""The runbooks of docs/runbooks.md that need daemons, an MTA or Sentinel, followed as
written on the integration harness: each command goes to a handler that does what
it says to the test's own processes (``systemctl reload`` is a SIGHUP to the real
policy daemon, ``journalctl -u X | grep P`` reads that daemon's log), and a command
no handler knows fails the test, so the page cannot drift. After each runbook the
test checks what it promises: the new config routes the mail, the new process
serves, the CLI reaches the master the sentinels name."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

from integration.configs import ENDPOINT_IP
from integration.conftest import MailSystem, base_config, write_config
from integration.daemons import CLI, HandingOverPolicyd
from integration.sentinel import SERVICE, SentinelSet
from integration.sink import free_port
from integration.waits import MAIL_S, wait_until
from tests.test_runbooks import commands, sections

PAGE = Path(__file__).resolve().parents[1] / "docs" / "runbooks.md"
LIVE = "/etc/smtp-balancer/config.yaml"
Handler = Callable[[list[str], str], str]


def runbook(title: str) -> list[str]:
    return commands(sections(PAGE)[title])


def follow(steps: list[str], handlers: dict[str, Handler]) -> list[str]:
    """Each step through the handler of its first words; ``A | grep 'P'`` runs A's
    handler and needs P in what it returns, as grep's exit status would."""
    ran = []
    for step in steps:
        command, _, grep = step.partition(" | grep ")
        words = shlex.split(command)
        key = next((k for k in handlers if words[: len(k.split())] == k.split()), None)
        assert key is not None, f"a runbook step this test does not know: {step!r}"
        out = handlers[key](words, shlex.split(grep)[0] if grep else "")
        if grep:
            assert shlex.split(grep)[0] in out, (step, out[-2000:])
        ran.append(key)
    return ran


def cli(config: Path, words: list[str]) -> str:
    """``smtp-balancer [-c FILE] ...`` against the test's files; it must exit 0."""
    args = words[1:]
    if args[:1] != ["-c"]:
        args = ["-c", str(config), *args]
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (words, done.stdout, done.stderr)
    return done.stdout


def reload(policyd: HandingOverPolicyd) -> str:
    """What the unit's ExecReload does: SIGHUP to the main process (ours, by its PID)."""
    assert policyd.pid is not None
    os.kill(policyd.pid, signal.SIGHUP)
    return ""


def restart(ms: MailSystem, words: list[str]) -> str:
    """``systemctl restart smtp-balancer-milter smtp-balancer-feedback``: stop, then start."""
    assert words[2:] == ["smtp-balancer-milter", "smtp-balancer-feedback"], words
    for daemon in (ms.milter, ms.feedback):
        daemon.stop()
        daemon.start()
    return ""


def test_roll_out_a_config_change(mail_system):
    ms = mail_system(milter=True, feedback=True)
    policyd = ms.policyd
    assert isinstance(policyd, HandingOverPolicyd)
    new = ms.config_path.with_name("config.yaml.new")
    raw = yaml.safe_load(ms.config_path.read_text())
    for pool in raw["pools"].values():  # the change: out2 leaves every pool
        pool["endpoints"] = [e for e in pool["endpoints"] if e["endpoint"] != "out2"]
    new.write_text(yaml.safe_dump(raw))
    paths = {LIVE: str(ms.config_path), LIVE + ".new": str(new)}

    def mapped(words: list[str]) -> list[str]:
        return [paths.get(w, w) for w in words]

    def journal(words: list[str], pattern: str) -> str:
        assert words[:3] == ["journalctl", "-u", "smtp-balancer-policyd"], words
        wait_until(
            lambda: pattern in policyd.log_path.read_text(), 30, f"{pattern!r} in the policy daemon's log"
        )
        return policyd.log_path.read_text()

    ran = follow(
        runbook("Roll out a config change"),
        {
            "smtp-balancer": lambda w, _: cli(ms.config_path, mapped(w)),
            "mv": lambda w, _: os.replace(*mapped(w)[1:3]) or "",
            "systemctl reload smtp-balancer-policyd": lambda w, _: reload(policyd),
            "systemctl restart": lambda w, _: restart(ms, w),
            "journalctl": journal,
            "systemctl kill": lambda w, _: str(policyd.hand_over()),
        },
    )
    assert ran.count("smtp-balancer") == 3 and ran[-1] == "systemctl kill"
    live = yaml.safe_load(ms.config_path.read_text())["pools"].values()
    assert all(e["endpoint"] != "out2" for pool in live for e in pool["endpoints"])
    assert ms.send_many(60) == []
    got = Counter(m.peer_ip for m in ms.sink.wait_for(60, timeout=MAIL_S))
    assert ENDPOINT_IP["out2"] not in got and set(got) <= set(ENDPOINT_IP.values()), got


def test_upgrade_a_host_of_the_fleet(mail_system):
    ms = mail_system(milter=True, feedback=True)
    policyd = ms.policyd
    assert isinstance(policyd, HandingOverPolicyd)
    before = policyd.pid

    ran = follow(
        runbook("Upgrade smtp-balancer on a fleet without losing mail"),
        {
            "smtp-balancer": lambda w, _: cli(ms.config_path, w),
            "/opt/smtp-balancer/venv/bin/pip install": lambda w, _: "",  # this checkout is installed
            "systemctl kill": lambda w, _: str(policyd.hand_over()),
            "systemctl restart": lambda w, _: restart(ms, w),
            "journalctl": lambda w, p: policyd.log_path.read_text(),
        },
    )
    assert ran.count("systemctl kill") == 1 and policyd.pid != before
    assert ms.send_many(30) == []
    got = ms.sink.wait_for(30, timeout=MAIL_S)
    assert all(m.peer_ip in ENDPOINT_IP.values() for m in got)


def test_redis_failing_over(tmp_path: Path):
    sentinels = SentinelSet(tmp_path / "sentinel")
    try:
        sentinels.start()
        sentinel = {"redis": {"sentinel": {"hosts": sentinels.hosts, "service_name": SERVICE}}}
        config = write_config(
            tmp_path, base_config("unix:///nowhere.sock", free_port(), free_port()), sentinel
        )
        asked: list[str] = []

        def ask_sentinel(words: list[str], _: str) -> str:
            assert words[1:3] == ["-p", "26379"], words
            argv = ["redis-cli", "-p", str(sentinels.sentinel_ports[0]), *words[3:]]
            if words[3:5] == ["SENTINEL", "get-master-addr-by-name"] and "failover" in asked:
                # after a failover the sentinels name the replica, once they agree
                sentinels.wait_failover()
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
            assert "ERR" not in done.stdout, done.stdout
            asked.append(words[4].lower())
            return done.stdout

        outputs: list[str] = []

        def status(words: list[str], _: str) -> str:
            out = cli(config, words)
            outputs.append(out)
            return out

        follow(runbook("Redis is down or failing over"), {"redis-cli": ask_sentinel, "smtp-balancer": status})
        assert asked.count("failover") == 1
        assert sentinels.master_address() == ("127.0.0.1", sentinels.replica_port)
        assert len(outputs) == 2 and all(outputs)  # status before and after, both from a master
    finally:
        sentinels.stop()
