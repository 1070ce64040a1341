"""SIGUSR2: a real ``smtp-balancer policyd`` hands its listening socket and its open
connections to a new process (policyd/handover.py). A client keeps its connection
across the handover and is answered by the new process on it; a successor that
cannot start leaves the old daemon serving."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import yaml

from integration.configs import deep_merge
from integration.daemons import HandingOverPolicyd, process_gone
from integration.sink import free_port
from integration.waits import wait_until
from tests.conftest import BASE

RCPT = b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@shop.test\nrecipient=b@example.test\n"


def ask(conn: socket.socket, instance: str) -> bytes:
    """One RCPT and one END-OF-MESSAGE request of a message; the decision's reply."""
    eom = RCPT.replace(b"RCPT", b"END-OF-MESSAGE")
    conn.sendall(RCPT + f"instance={instance}\n\n".encode() + eom + f"instance={instance}\n\n".encode())
    reply = b""
    while reply.count(b"\n\n") < 2:
        chunk = conn.recv(4096)
        assert chunk, f"connection closed after {reply!r}"
        reply += chunk
    return reply.split(b"\n\n")[1]


def daemon_for(redis_server, tmp_path: Path, listen: str, port: int) -> tuple[HandingOverPolicyd, Path]:
    raw = deep_merge(
        BASE, {"redis": {"url": redis_server.url}, "policyd": {"listen": [listen], "metrics_listen": ""}}
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    return HandingOverPolicyd(config, port, tmp_path / "policyd.log"), config


@pytest.mark.parametrize("clients", [1, 300])
def test_open_connections_are_answered_by_the_successor_on_the_same_socket(
    redis_server, tmp_path: Path, clients: int
) -> None:
    port = free_port()
    daemon, _ = daemon_for(redis_server, tmp_path, f"inet:127.0.0.1:{port}", port)
    daemon.start()
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(clients)]
    try:
        for i, conn in enumerate(conns):
            assert ask(conn, f"before{i}").startswith(b"action=FILTER ")
        old = daemon.pid
        new = daemon.hand_over()
        assert new != old and process_gone(old)
        for i, conn in enumerate(conns):  # the same sockets: smtpd would notice nothing
            assert ask(conn, f"after{i}").startswith(b"action=FILTER ")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as fresh:
            assert ask(fresh, "fresh").startswith(b"action=FILTER ")
        text = daemon.log_path.read_text()
        assert f"{clients} connection(s) handed over, 0 closed busy" in text
        assert f"took over inet:127.0.0.1:{port} and {clients} connection(s)" in text
        daemon.hand_over()  # and again: the successor hands over as well
        for i, conn in enumerate(conns):
            assert ask(conn, f"again{i}").startswith(b"action=FILTER ")
    finally:
        for conn in conns:
            conn.close()
        daemon.stop()


def test_a_unix_socket_is_handed_over_and_stays_in_place(redis_server, tmp_path: Path) -> None:
    path = tmp_path / "policy.sock"
    daemon, _ = daemon_for(redis_server, tmp_path, f"unix:{path}", 0)
    daemon.ready = lambda: path.exists()
    daemon.start()
    conn = socket.socket(socket.AF_UNIX)
    try:
        wait_until(lambda: conn.connect_ex(str(path)) == 0, 10, "the unix socket")
        assert ask(conn, "1").startswith(b"action=FILTER ")
        daemon.hand_over()
        assert path.exists()
        assert ask(conn, "2").startswith(b"action=FILTER ")
    finally:
        conn.close()
        daemon.stop()


def test_a_successor_that_cannot_start_leaves_the_daemon_serving(redis_server, tmp_path: Path) -> None:
    port = free_port()
    daemon, config = daemon_for(redis_server, tmp_path, f"inet:127.0.0.1:{port}", port)
    daemon.start()
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        assert ask(conn, "1").startswith(b"action=FILTER ")
        config.write_text("pools: [not, a, mapping\n")  # a broken release of the YAML
        old = daemon.pid
        assert old is not None
        os.kill(old, signal.SIGUSR2)
        wait_until(lambda: "handover failed, still serving" in daemon.log_path.read_text(), 60, "the failure")
        assert daemon.handovers() == [] and not process_gone(old)
        assert ask(conn, "2").startswith(b"action=FILTER ")  # the same connection, the same daemon
    finally:
        conn.close()
        daemon.stop()
