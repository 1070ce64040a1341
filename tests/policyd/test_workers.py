"""policyd.workers: the supervisor and its workers, as real processes on a real redis-server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from integration.configs import deep_merge
from integration.daemons import PolicydProcess, children, process_gone
from integration.sink import free_port
from integration.waits import wait_until
from policyd import workers as workers_module
from policyd.listeners import bind_listeners
from policyd.workers import FROZEN_AFTER_S, Supervisor, Worker, frozen, least_busy, restart_delay, worker_argv
from smtp_balancer.cli.common import EXIT_USAGE
from smtp_balancer.cli.main import main
from smtp_balancer.clock import utc_now
from smtp_balancer.config import validate_config
from smtp_balancer.observe.metrics import ListenError
from tests.conftest import BASE


def request(i: int, state: str = "END-OF-MESSAGE") -> bytes:
    return (
        f"request=smtpd_access_policy\nprotocol_state={state}\nsender=a@shop.test\n"
        f"recipient=u{i}@example.test\nqueue_id=Q{i}\ninstance=w.{i}\n\n"
    ).encode()


def ask(sock: socket.socket, i: int, state: str = "END-OF-MESSAGE") -> bytes:
    """The reply on a persistent connection; b"" when the server side is gone."""
    try:
        sock.sendall(request(i, state))
        data = b""
        while not data.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            if not chunk:
                return b""
            data += chunk
        return data
    except (BrokenPipeError, ConnectionResetError):
        return b""


def connect(daemon: PolicydProcess, unix: Path, k: int) -> socket.socket:
    """Even k over TCP, odd k over the unix socket: both listeners pass connections."""
    if k % 2:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(unix))
    else:
        sock = socket.create_connection(("127.0.0.1", daemon.port))
    sock.settimeout(10)
    return sock


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def worker_pids(daemon: PolicydProcess) -> list[int]:
    assert daemon.proc is not None
    return children(daemon.proc.pid)


class Daemon:
    def __init__(self, redis_url: str, tmp_path: Path, extra: dict[str, Any] | None = None) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.unix = tmp_path / "policy.sock"
        self.raw = deep_merge(
            BASE,
            {
                "redis": {"url": redis_url},
                "policyd": {
                    "listen": [f"inet:127.0.0.1:{self.port}", f"unix:{self.unix}"],
                    "metrics_listen": f"127.0.0.1:{self.metrics_port}",
                    "workers": 2,
                },
                **(extra or {}),
            },
        )
        self.path = tmp_path / "config.yaml"
        self.path.write_text(yaml.safe_dump(self.raw))
        self.tmpdir = tmp_path / "tmp"  # the supervisor's metrics directory goes here
        self.tmpdir.mkdir()
        self.process = PolicydProcess(
            self.path, self.port, tmp_path / "policyd.log", env={"TMPDIR": str(self.tmpdir)}
        )
        # ready when the supervisor says it listens: it calls listen() on one listener
        # after the other, and a loaded CI host once ran a test's first unix connect in
        # between. Read from the log, not by connecting: a probe's connection goes to a
        # worker too, and the test counts each worker's connections
        self.process.ready = lambda: "policy service listening on" in self.log()  # log opened first

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


@pytest.fixture
def daemon(redis_server, tmp_path: Path):
    made: list[Daemon] = []

    def start(extra: dict[str, Any] | None = None) -> Daemon:
        d = Daemon(redis_server.url, tmp_path, extra)
        made.append(d)
        d.process.start()
        return d

    yield start
    for d in made:
        d.process.stop()


# -- the supervisor's choices, without processes ------------------------------------
def test_least_busy_orders_ready_workers_by_connections():
    a, b, c = Worker(0, ready=True, connections=3), Worker(1, ready=True, connections=1), Worker(2)
    for w in (a, b):
        w.control = socket.socket()
    try:
        assert least_busy([a, b, c]) == [b, a]  # c is not ready
        b.connections = 3
        assert least_busy([a, b, c]) == [a, b]  # a tie: the lower slot first
    finally:
        for w in (a, b):
            assert w.control is not None
            w.control.close()


def test_restart_delay_backs_off_and_a_healthy_run_resets_it():
    worker = Worker(0, started_at=100.0)
    assert [restart_delay(worker, 101.0) for _ in range(7)] == [1.0, 2.0, 5.0, 10.0, 30.0, 30.0, 30.0]
    worker.started_at = 200.0
    assert restart_delay(worker, 200.0 + 60) == 1.0


def test_frozen_are_the_ready_workers_silent_past_the_limit():
    quiet = Worker(0, ready=True, heard_at=100.0)
    talking = Worker(1, ready=True, heard_at=109.0)
    starting = Worker(2, ready=False, heard_at=0.0)  # not ready yet: it may import for a while
    assert frozen([quiet, talking, starting], 100.0 + FROZEN_AFTER_S + 0.5) == [quiet]
    assert frozen([quiet, talking, starting], 100.0 + FROZEN_AFTER_S) == []


def test_worker_argv_is_the_same_daemon_told_its_control_descriptor():
    argv = worker_argv("/etc/sb.yaml", "warning", "json", 7)
    assert argv[1:] == [
        "-m",
        "smtp_balancer.cli.main",
        "-c",
        "/etc/sb.yaml",
        "policyd",
        "--log-level",
        "warning",
        "--log-format",
        "json",
        "--worker-control",
        "7",
    ]


def test_bind_listeners_names_a_taken_port_and_an_unknown_owner(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = validate_config(
            deep_merge(BASE, {"policyd": {"listen": [f"inet:127.0.0.1:{port}"]}})
        ).policyd
        with pytest.raises(
            ListenError, match=rf"policyd.listen inet:127.0.0.1:{port}: cannot listen: Address"
        ):
            bind_listeners(config)
    sock_path = tmp_path / "p.sock"
    raw = {"policyd": {"listen": [f"unix:{sock_path}"], "unix_owner": "no-such-user-sb"}}
    with pytest.raises(ListenError, match="no such user or group"):
        bind_listeners(validate_config(deep_merge(BASE, raw)).policyd)


def test_worker_control_that_is_not_a_socket_is_a_usage_error(make_config, tmp_path: Path, capsys):
    make_config()
    with open(tmp_path / "plain", "w") as plain:
        code = main(["-c", str(tmp_path / "config.yaml"), "policyd", "--worker-control", str(plain.fileno())])
    assert code == EXIT_USAGE
    assert "not a socket (the policy supervisor sets this option)" in capsys.readouterr().err


# -- real processes -------------------------------------------------------------------
def test_connections_are_spread_evenly_and_metrics_are_the_workers_sum(daemon):
    d = daemon()
    assert len(worker_pids(d.process)) == 2
    conns = [connect(d.process, d.unix, k) for k in range(10)]
    try:
        replies = Counter(ask(conns[i % 10], i) for i in range(400))
        assert sum(n for r, n in replies.items() if r.startswith(b"action=FILTER out")) == 400, replies
        m = metrics(d.metrics_port)
        assert m["smtp_balancer_policy_connections"] == 10
        assert m['smtp_balancer_policy_requests_total{stage="end_of_message"}'] == 400
        decided = sum(v for k, v in m.items() if k.startswith("smtp_balancer_decisions_total{"))
        assert decided == 400
        # an RCPT on each worker: the open messages gauge is their sum (written every second)
        for k in (0, 1):
            assert ask(conns[k], 500 + k, "RCPT") == b"action=DUNNO\n\n"
        wait_until(
            lambda: metrics(d.metrics_port)["smtp_balancer_policy_open_instances"] == 2,
            timeout=10,
            what="two open messages",
        )

        # one worker dies: exactly its half of the connections closes, the rest are served
        pids_before = worker_pids(d.process)
        victim = pids_before[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: process_gone(victim), timeout=10, what="the killed worker gone")
        after = [ask(c, 1000 + k) for k, c in enumerate(conns)]
        assert sum(1 for r in after if r == b"") == 5, after
        assert all(r.startswith(b"action=FILTER out") for r in after if r), after

        # started again; new connections go to it too
        wait_until(lambda: "starting policy worker" in d.log(), timeout=10, what="a restart")
        pids = wait_until(
            lambda: len(pids := worker_pids(d.process)) == 2 and victim not in pids and pids,
            timeout=20,
            what="two workers again",
        )
        (new,) = set(pids) - set(pids_before)
        wait_until(lambda: f"(pid {new}) ready" in d.log(), timeout=20, what="the new worker ready")
        fresh = [connect(d.process, d.unix, k) for k in range(4)]  # all to the new one: it has none
        conns += fresh
        assert all(ask(c, 2000 + k).startswith(b"action=FILTER out") for k, c in enumerate(fresh))
        # counters of the dead worker still count; its connections gauge does not
        m = metrics(d.metrics_port)
        assert m["smtp_balancer_policy_connections"] == 5 + 4
        assert sum(v for k, v in m.items() if k.startswith("smtp_balancer_decisions_total{")) == 400 + 5 + 4
        assert re.search(r"policy worker \d \(pid \d+\) exited with status -9", d.log())

        # the fresh connections are on the new worker: the survivor's death leaves them be
        survivor = next(p for p in worker_pids(d.process) if p in pids_before)
        os.kill(survivor, signal.SIGKILL)
        wait_until(lambda: process_gone(survivor), timeout=10, what="the survivor gone")
        assert all(ask(c, 3000 + k).startswith(b"action=FILTER out") for k, c in enumerate(fresh))
    finally:
        for c in conns:
            c.close()


def test_sighup_reaches_every_worker_and_workers_needs_a_restart(daemon):
    d = daemon()
    assert d.process.proc is not None
    only_out3 = deep_merge(
        d.raw,
        {"pools": {"main": {"endpoints": [{"endpoint": "out3", "weight": 1}]}}, "policyd": {"workers": 3}},
    )
    d.path.write_text(yaml.safe_dump(only_out3))
    os.kill(d.process.proc.pid, signal.SIGHUP)
    wait_until(lambda: d.log().count("config reloaded from") == 2, timeout=15, what="both workers reloaded")
    assert d.log().count("policyd.workers changed: it takes effect on restart") == 1
    conns = [connect(d.process, d.unix, k) for k in range(6)]  # three on each worker
    try:
        assert {ask(c, k) for k, c in enumerate(conns)} == {b"action=FILTER out3:\n\n"}
    finally:
        for c in conns:
            c.close()
    assert len(worker_pids(d.process)) == 2


def test_a_warmup_cap_is_exact_across_workers(daemon):
    cap = {"warmup": {"start": utc_now().date().isoformat(), "schedule": [50]}}
    d = daemon({"endpoints": {"out3": cap}})
    conns = [connect(d.process, d.unix, k) for k in range(6)]
    # out3 is drawn at its weight, 1 of 4, until its 50 are spent: 400 requests leave
    # it short by chance with probability 1.8e-10 (with 300 it was 2e-4)
    try:
        replies = Counter(ask(conns[i % 6], i) for i in range(400))
    finally:
        for c in conns:
            c.close()
    assert replies[b"action=FILTER out3:\n\n"] == 50, replies
    assert sum(replies.values()) == 400


def test_a_frozen_worker_is_killed_and_started_again(daemon):
    d = daemon()
    victim = worker_pids(d.process)[0]
    os.kill(victim, signal.SIGSTOP)  # its loop stops: no more signs of life
    try:
        wait_until(
            lambda: f"(pid {victim}) has been silent for" in d.log(),
            timeout=FROZEN_AFTER_S + 20,
            what="the frozen worker named",
        )
        wait_until(lambda: process_gone(victim), timeout=10, what="the frozen worker killed")
        wait_until(
            lambda: len(pids := worker_pids(d.process)) == 2 and victim not in pids,
            timeout=20,
            what="two workers again",
        )
    finally:
        if not process_gone(victim):
            os.kill(victim, signal.SIGCONT)


def test_sigterm_stops_every_worker_and_removes_the_metrics_files(daemon):
    d = daemon()
    assert d.process.proc is not None
    pids = worker_pids(d.process)
    assert len(pids) == 2 and list(d.tmpdir.iterdir())  # the metrics directory
    d.process.proc.send_signal(signal.SIGTERM)
    assert d.process.proc.wait(timeout=20) == 0
    assert all(process_gone(pid) for pid in pids)
    assert list(d.tmpdir.iterdir()) == []


def test_workers_stop_when_their_supervisor_is_killed(daemon):
    d = daemon()
    assert d.process.proc is not None
    pids = worker_pids(d.process)
    d.process.proc.kill()  # no SIGTERM for the workers: they see their line close
    d.process.proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while not all(process_gone(pid) for pid in pids):
        assert time.monotonic() < deadline, "orphaned workers still run"
        time.sleep(0.1)


def test_sigterm_while_workers_start_stops_them_all(redis_server, tmp_path: Path):
    d = Daemon(redis_server.url, tmp_path)
    proc = subprocess.Popen(d.process.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids = wait_until(lambda: len(c := children(proc.pid)) == 2 and c, timeout=10, what="two workers")
        proc.send_signal(signal.SIGTERM)  # long before they are ready (imports alone take longer)
        assert proc.wait(timeout=20) == 0
        assert all(process_gone(pid) for pid in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class FullTable(socket.socket):
    """A listener whose accept() fails as it does when the process is out of descriptors."""

    calls = 0

    def accept(self):  # type: ignore[override]
        FullTable.calls += 1
        raise OSError(24, "Too many open files")


async def _calls(n: int) -> None:
    while FullTable.calls < n:
        await asyncio.sleep(0.01)


async def test_a_failed_accept_rests_the_listener_instead_of_spinning(monkeypatch):
    # the rest runs on the loop's clock from the failure: a check made before it ends
    # (a shorter sleep, started after the failure) sees no new accept however late it runs
    monkeypatch.setattr(workers_module, "ACCEPT_RETRY_S", 2.0)
    FullTable.calls = 0
    config = validate_config(deep_merge(BASE, {"policyd": {"workers": 2}}))
    supervisor = Supervisor(config, "/dev/null", "info", "logfmt")
    loop = asyncio.get_running_loop()
    with FullTable() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()):  # readable from now on
            loop.add_reader(listener.fileno(), supervisor._accept, listener)
            try:
                await _calls(1)
                await asyncio.sleep(0.2)
                assert FullTable.calls == 1  # removed from the loop after one failure
                await _calls(2)  # back after the rest
                await asyncio.sleep(0.2)
                assert FullTable.calls == 2  # and resting again
            finally:
                loop.remove_reader(listener.fileno())
