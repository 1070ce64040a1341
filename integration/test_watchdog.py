"""systemd's watchdog protocol, checked with a NOTIFY_SOCKET of our own (issue #15).

Each daemon says READY=1 once it serves and WATCHDOG=1 from its working loop.
Frozen (SIGSTOP), it stops pinging, which is what makes systemd restart it
(Type=notify, WatchdogSec= in mta-configs/systemd/); thawed, it pings again.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from integration.waits import MAIL_S, wait_until

WATCHDOG_USEC = 400_000  # pings every 0.2 s


def messages(sock: socket.socket, seconds: float) -> list[bytes]:
    """Everything that arrives within ``seconds``."""
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recv(1000))
        except TimeoutError:
            break
    return out


@pytest.fixture
def notify_sockets(tmp_path: Path):
    socks = {}
    for name in ("policyd", "milter", "feedback"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(tmp_path / f"{name}.notify"))
        socks[name] = sock
    yield socks
    for sock in socks.values():
        sock.close()


def test_each_daemon_is_ready_pings_and_stops_pinging_when_frozen(mail_system, notify_sockets):
    env = {
        name: {"NOTIFY_SOCKET": sock.getsockname(), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        for name, sock in notify_sockets.items()
    }
    ms = mail_system(milter=True, feedback=True, env=env)
    daemons = {"policyd": ms.policyd, "milter": ms.milter, "feedback": ms.feedback}
    for name, sock in notify_sockets.items():
        got = messages(sock, 1.5)
        assert got and got[0].startswith(b"READY=1"), (name, got)
        assert got.count(b"WATCHDOG=1") >= 3, (name, got)  # about one every 0.2 s

        proc = daemons[name].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            messages(sock, 0.3)  # what was on its way
            assert messages(sock, 1.5) == [], name  # frozen: silent, systemd would act
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert b"WATCHDOG=1" in messages(sock, 1.5), name
    # and mail still flows through them all
    ms.send("app@shop.test", ["user1@example.test"], seq=1)
    ms.sink.wait_for(1, timeout=MAIL_S)


def test_each_daemon_notices_its_own_stall_without_systemd(mail_system):
    """No NOTIFY_SOCKET: nothing outside would notice a frozen daemon. Each one, stopped
    for 1.5 s, says so itself once thawed: a log line and its stall counter."""
    import urllib.request

    import yaml

    ms = mail_system(milter=True, feedback=True)
    config = yaml.safe_load(ms.config_path.read_text())
    daemons = {
        "policyd": (ms.policyd, config["policyd"]["metrics_listen"]),
        "milter": (ms.milter, config["milter"]["metrics_listen"]),
        "feedback daemon": (ms.feedback, config["feedback"]["metrics_listen"]),
    }

    def stalls(listen: str) -> float:
        text = urllib.request.urlopen(f"http://{listen}/metrics", timeout=5).read().decode()
        lines = [ln for ln in text.splitlines() if ln.startswith("smtp_balancer_stalls_total")]
        return sum(float(ln.split()[-1]) for ln in lines)

    for name, (daemon, listen) in daemons.items():
        assert stalls(listen) == 0, name
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(1.5)  # the stall itself, not a wait for an event
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)
        wait_until(lambda listen=listen: stalls(listen) >= 1, 10, f"{name}'s stall counted")
        assert f"{name} stalled for " in daemon.log_path.read_text(), name
