"""SIGHUP reload on the real daemon process: broken YAML refused, valid YAML adopted."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import yaml

from integration.configs import deep_merge
from integration.daemons import PolicydProcess
from integration.sink import free_port
from tests.conftest import BASE

EOM = (
    b"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nsender=a@shop.test\n"
    b"recipient=b@example.test\n\n"
)


def ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(EOM)
        data = b""
        while not data.endswith(b"\n\n"):
            data += s.recv(4096)
        return data


def wait_for_log(daemon: PolicydProcess, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in daemon.log_path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not logged: {daemon.log_tail()}"
        time.sleep(0.05)


def test_sighup_reload(redis_server, tmp_path: Path):
    port, metrics_port = free_port(), free_port()
    raw = deep_merge(
        BASE,
        {
            "redis": {"url": redis_server.url},
            "policyd": {"listen": [f"inet:127.0.0.1:{port}"], "metrics_listen": f"127.0.0.1:{metrics_port}"},
        },
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    daemon = PolicydProcess(path, port, tmp_path / "policyd.log")
    daemon.start()
    try:
        assert ask(port).startswith(b"action=FILTER out")
        path.write_text("endpoints: [unclosed\n")  # a broken edit
        os.kill(daemon.proc.pid, signal.SIGHUP)
        wait_for_log(daemon, "config reload refused, still serving the previous config")
        assert ask(port).startswith(b"action=FILTER out")  # still serving
        only_out3 = deep_merge(
            raw,
            {
                "pools": {"main": {"endpoints": [{"endpoint": "out3", "weight": 1}]}},
                "policyd": {"unix_mode": "0600", "join_ttl_s": 60},
            },
        )
        path.write_text(yaml.safe_dump(only_out3))
        os.kill(daemon.proc.pid, signal.SIGHUP)
        wait_for_log(daemon, "config reloaded from")
        assert "policyd.unix_mode changed: it takes effect on restart" in daemon.log_path.read_text()
        assert {ask(port) for _ in range(20)} == {b"action=FILTER out3:\n\n"}
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert 'smtp_balancer_config_reloads_total{result="error"} 1.0' in text
        assert 'smtp_balancer_config_reloads_total{result="ok"} 1.0' in text
    finally:
        daemon.stop()


def test_sighup_starts_and_stops_shadow_mode_and_a_broken_candidate_only_turns_it_off(
    redis_server, tmp_path: Path
):
    port = free_port()
    raw = deep_merge(
        BASE,
        {
            "redis": {"url": redis_server.url},
            "policyd": {"listen": [f"inet:127.0.0.1:{port}"], "metrics_listen": ""},
        },
    )
    path, candidate = tmp_path / "config.yaml", tmp_path / "candidate.yaml"
    path.write_text(yaml.safe_dump(raw))
    candidate.write_text(
        yaml.safe_dump(deep_merge(raw, {"pools": {"main": {"endpoints": [{"endpoint": "out3"}]}}}))
    )
    daemon = PolicydProcess(path, port, tmp_path / "policyd.log")
    daemon.start()
    try:
        ask(port)
        path.write_text(yaml.safe_dump({**raw, "shadow": {"config": "candidate.yaml"}}))  # beside it
        os.kill(daemon.proc.pid, signal.SIGHUP)
        wait_for_log(daemon, "shadow mode: deciding every message under candidate.yaml too")
        assert ask(port).startswith(b"action=FILTER out")
        wait_for_log(daemon, "shadow_endpoint=out3")
        candidate.write_text("pools: [\n")
        os.kill(daemon.proc.pid, signal.SIGHUP)
        wait_for_log(daemon, "shadow mode is off, live routing goes on")
        assert ask(port).startswith(b"action=FILTER out")  # the live config still routes
    finally:
        daemon.stop()
    text = daemon.log_path.read_text()
    assert "YAML syntax error" in text and text.count("shadow_endpoint=") == 1
