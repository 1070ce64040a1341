"""The real policyd process when its listen addresses are busy: one line, exit 5."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from integration.configs import deep_merge
from integration.daemons import CLI
from integration.sink import free_port
from smtp_balancer.cli.common import EXIT_LISTEN
from tests.conftest import BASE


@pytest.mark.parametrize("busy", ["listen", "metrics_listen"])
def test_a_busy_address_is_one_line_naming_the_option_and_exit_5(redis_server, tmp_path: Path, busy: str):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    ports = {"listen": free_port(), "metrics_listen": free_port()}
    ports[busy] = taken
    raw = deep_merge(
        BASE,
        {
            "redis": {"url": redis_server.url},
            "policyd": {
                "listen": [f"inet:127.0.0.1:{ports['listen']}"],
                "metrics_listen": f"127.0.0.1:{ports['metrics_listen']}",
            },
        },
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        out = subprocess.run(
            [CLI, "-c", str(path), "policyd"], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        holder.close()
    assert out.returncode == EXIT_LISTEN, out.stderr
    address = f"inet:127.0.0.1:{taken}" if busy == "listen" else f"127.0.0.1:{taken}"
    assert f"smtp-balancer: policyd.{busy} {address}: cannot listen: Address already in use" in out.stderr
    assert "Traceback" not in out.stderr
