"""Starting and stopping the milter: the one-line errors when it cannot listen, and a
stop signal taken by the main thread, which wakes libmilter's listener."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from smtp_balancer_milter.main import libmilter_socket, wake_listener

from integration.configs import lone_milter_config
from integration.sink import free_port
from integration.waits import START_S, wait_until

CLI = str(Path(sys.executable).with_name("smtp-balancer"))


def start_milter(tmp_path: Path, milter: dict) -> subprocess.CompletedProcess[str]:
    config = lone_milter_config(tmp_path, milter)
    return subprocess.run([CLI, "-c", str(config), "milter"], capture_output=True, text=True, timeout=60)


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


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_is_taken_by_the_main_thread_and_the_milter_exits_0(tmp_path: Path, stop: int):
    """The main thread takes the stop (libmilter's own signal thread would leave its
    listener to notice within 5 s): the line names the signal, and the exit is clean."""
    path = tmp_path / "m.sock"
    config = lone_milter_config(tmp_path, {"listen": f"unix:{path}"})
    proc = subprocess.Popen(
        [CLI, "-c", str(config), "milter"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until(path.exists, START_S, "the milter's socket")
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=START_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert f"milter stopping on {signal.Signals(stop).name}" in out
    assert "milter stopping: giving leases back" in out


def test_wake_listener_connects_to_a_unix_socket(tmp_path: Path):
    path = tmp_path / "l.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        listener.settimeout(5)
        wake_listener(f"unix:{path}")
        conn, _ = listener.accept()
        with conn:
            assert conn.recv(1) == b""  # hung up at once: libmilter's session ends


@pytest.mark.parametrize("bound", ["127.0.0.1", "0.0.0.0"])
def test_wake_listener_connects_to_an_inet_socket(bound: str):
    with socket.socket() as listener:
        listener.bind((bound, 0))
        listener.listen()
        listener.settimeout(5)
        wake_listener(f"inet:{bound}:{listener.getsockname()[1]}")  # milter.listen's syntax
        conn, peer = listener.accept()
        with conn:
            assert peer[0] == "127.0.0.1"
            assert conn.recv(1) == b""


def test_wake_listener_says_nothing_when_nobody_listens(tmp_path: Path):
    wake_listener(f"unix:{tmp_path}/gone.sock")  # the listener may have closed already
    wake_listener(f"inet:127.0.0.1:{free_port()}")


@pytest.mark.parametrize(
    ("listen", "libmilter"),
    [
        ("unix:/run/m.sock", "unix:/run/m.sock"),
        ("inet:127.0.0.1:8891", "inet:8891@127.0.0.1"),
        ("inet:[::1]:8891", "inet6:8891@::1"),  # libmilter's inet is IPv4 only
    ],
)
def test_listen_in_libmilters_words(listen: str, libmilter: str) -> None:
    assert libmilter_socket(listen) == libmilter
