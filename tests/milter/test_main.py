"""Starting the milter: its socket's mode and group, and the one-line errors when it cannot listen."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

from integration.sink import free_port

CLI = str(Path(sys.executable).with_name("smtp-balancer"))


def start_milter(tmp_path: Path, milter: dict) -> subprocess.CompletedProcess[str]:
    config = {
        # no Redis is needed to fail at the socket: decisions would degrade
        "redis": {"url": f"unix://{tmp_path}/absent.sock"},
        "mx_lookup": {"enabled": False},
        "milter": {"enabled": True, "metrics_listen": "", **milter},
        "endpoints": {"out1": {}},
        "pools": {"p": {"endpoints": [{"endpoint": "out1"}]}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([CLI, "-c", str(path), "milter"], capture_output=True, text=True, timeout=60)


def test_a_missing_socket_group_is_one_line_and_exit_5(tmp_path: Path):
    out = start_milter(tmp_path, {"listen": f"unix:{tmp_path}/m.sock", "socket_group": "no-such-group-x"})
    assert out.returncode == 5
    assert out.stderr.strip().splitlines()[-1] == (
        "smtp-balancer: milter.socket_group no-such-group-x: cannot listen: no such group on this host"
    )
    assert "Traceback" not in out.stderr


def test_a_busy_inet_port_is_one_line_and_exit_5(tmp_path: Path):
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        out = start_milter(tmp_path, {"listen": f"inet:127.0.0.1:{port}"})
    assert out.returncode == 5, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"smtp-balancer: milter.listen inet:127.0.0.1:{port}: cannot listen:")
    assert "Traceback" not in out.stderr
