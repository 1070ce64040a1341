"""Socket activation: a restart refuses no connection when systemd holds the socket.

A real ``smtp-balancer policyd`` is restarted three times while clients keep
connecting. Started as a .socket unit's service (the test holds the listening
socket, as systemd does), no connection is refused: they wait in the backlog and
the next process answers them. Bound by the daemon itself, the same restarts
refuse connections.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from integration.configs import deep_merge
from integration.daemons import ActivatedPolicyd, PolicydProcess, held_socket
from integration.sink import free_port
from integration.waits import wait_until
from tests.conftest import BASE

EOM = (
    b"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nsender=a@shop.test\n"
    b"recipient=b@example.test\ninstance=1\n\n"
)


class Clients:
    """Four threads asking one request per connection until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answered = 0
        self.refused = 0
        self.other: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(4)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as conn:
                    conn.sendall(EOM)
                    reply = b""
                    while not reply.endswith(b"\n\n"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        reply += chunk
                if reply.startswith(b"action="):
                    self.answered += 1
                else:
                    self.other.append(repr(reply))
            except ConnectionRefusedError:
                self.refused += 1
                time.sleep(0.01)
            except OSError as exc:  # reset by a daemon stopping mid-request
                self.other.append(repr(exc))

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=60)


@pytest.mark.parametrize(
    ("activated", "workers"),
    [(True, 1), (True, 2), (False, 1)],
    ids=["socket-activated", "socket-activated-2-workers", "self-bound"],
)
def test_restarts_refuse_no_connection_under_socket_activation(
    redis_server, tmp_path: Path, activated: bool, workers: int
):
    port = free_port()
    raw = deep_merge(
        BASE,
        {
            "redis": {"url": redis_server.url},
            "policyd": {"listen": [f"inet:127.0.0.1:{port}"], "metrics_listen": "", "workers": workers},
        },
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    listener = None
    if activated:
        listener = held_socket(port)
        daemon = ActivatedPolicyd(config, listener, tmp_path / "policyd.log")
    else:
        daemon = PolicydProcess(config, port, tmp_path / "policyd.log")
    daemon.start()
    clients = Clients(port)
    try:
        for restart in range(3):
            seen = clients.answered
            more = lambda seen=seen: clients.answered >= seen + 50  # noqa: E731
            wait_until(more, 30, f"answers before restart {restart}")
            daemon.stop()  # SIGTERM, as systemctl restart does; then the new process
            daemon.start()
        seen = clients.answered
        wait_until(lambda: clients.answered >= seen + 50, 30, "answers after the last restart")
    finally:
        clients.stop()
        daemon.stop()
        if listener is not None:
            listener.close()
    if activated:
        # the claim is about refusals; a connection the stopping daemon had accepted can
        # still be reset at its exit (clients.other), an open finding (issue #30 notes)
        assert clients.refused == 0, clients.refused
        assert f"policy service listening on inet:127.0.0.1:{port}" in daemon.log_path.read_text()
    else:  # the control: the daemon's own socket is gone while it restarts
        assert clients.refused > 0
