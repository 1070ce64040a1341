"""sd_notify: the datagrams systemd would receive, on a socket of our own."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from smtp_balancer.observe.sdnotify import Notifier


def listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    return sock


def test_ready_ping_and_stopping_reach_the_socket(tmp_path: Path):
    with listener(tmp_path / "notify") as sock:
        n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "4000000"})
        assert n.interval_s == 2.0  # twice per watchdog interval
        assert n.ready("serving") and sock.recv(100) == b"READY=1\nSTATUS=serving"
        assert n.ping() and sock.recv(100) == b"WATCHDOG=1"
        assert n.stopping() and sock.recv(100) == b"STOPPING=1"


def test_abstract_namespace_socket():
    name = f"sb-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready() and sock.recv(100) == b"READY=1"


def test_no_systemd_no_watchdog_or_another_process_s_watchdog(tmp_path: Path, caplog):
    assert not Notifier({}).enabled and not Notifier({}).ready()
    # a watchdog meant for another PID (a parent's) is not ours to feed
    other = Notifier({"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.interval_s is None and not other.ping()
    # a socket that is gone: one warning, never an exception
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")})
    assert not gone.ready() and not gone.ready()
    assert sum("cannot notify systemd" in r.getMessage() for r in caplog.records) == 1
