"""Our real daemons as child processes for tests, killable by PID mid-run."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from integration.waits import START_S, WaitTimeout, wait_until
from smtp_balancer.config.base import parse_hostport

CLI = str(Path(sys.executable).with_name("smtp-balancer"))


def run_cli(config: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    """``smtp-balancer -c CONFIG ARGS``, as an operator runs it: its exit code, stdout, stderr."""
    return subprocess.run([CLI, "-c", str(config), *args], capture_output=True, text=True, timeout=60)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process and its live children so far, from /proc
    (benchmarks; a policy supervisor's workers are its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in children(pid))


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out.extend(int(c) for c in task.read_text().split())
        except OSError:  # the thread ended meanwhile
            continue
    return out


def metric_sum(port: int, series: str) -> float:
    """A daemon's /metrics on 127.0.0.1:``port``: the sum of the samples whose line starts
    with ``series`` (a name, or a name and the start of its labels); 0 when none has a
    sample yet. A name the daemon does not export at all raises: a renamed metric must
    fail the test that reads it, not read as 0."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    name = re.split(r"[{ ]", series, maxsplit=1)[0]
    family = re.sub(r"_(bucket|sum|count|created)$", "", name)
    if f"# TYPE {name} " not in text and f"# TYPE {family} " not in text:
        raise KeyError(f"port {port} exports no metric {name}")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series))


def metrics_port(config_path: Path, daemon: str) -> int:
    """The port of ``<daemon>.metrics_listen`` (127.0.0.1:PORT) in a test's config file."""
    listen = yaml.safe_load(config_path.read_text())[daemon]["metrics_listen"]
    return int(listen.rpartition(":")[2])


def tcp_ready(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.settimeout(0.2)
            return s.connect_ex((host, port)) == 0

    return check


def listen_ready(listen: str) -> Callable[[], bool]:
    """Readiness of a daemon's ``listen`` setting: ``unix:/path`` or ``inet:host:port``."""
    if listen.startswith("unix:"):
        return unix_ready(Path(listen.removeprefix("unix:")))
    host, port = parse_hostport(listen.removeprefix("inet:"))
    return tcp_ready(port, host)


def unix_ready(path: Path) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(0.2)
            return s.connect_ex(str(path)) == 0

    return check


class DaemonProcess:
    """``smtp-balancer -c CONFIG <command>``, ready when ``ready()`` says so."""

    def __init__(
        self,
        command: str,
        config_path: Path,
        log_path: Path,
        ready: Callable[[], bool],
        log_level: str = "info",
        log_format: str = "logfmt",
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: variables added to this daemon's environment (a systemd unit's Environment=)."""
        self.command = command
        self.env = env
        self.pass_fds: tuple[int, ...] = ()  # descriptors the daemon inherits
        self.config_path = config_path
        self.log_path = log_path
        self.ready = ready
        self.log_level = log_level
        self.log_format = log_format
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
                pass_fds=self.pass_fds,
            )
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command} exited at start: {self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.command} did not get ready: {self.log_tail()}")

    def argv(self) -> list[str]:
        return [
            CLI,
            "-c",
            str(self.config_path),
            self.command,
            "--log-level",
            self.log_level,
            "--log-format",
            self.log_format,
        ]

    def kill(self) -> None:
        """SIGKILL our daemon: the crash case (no graceful goodbye to Postfix)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class PolicydProcess(DaemonProcess):
    def __init__(
        self,
        config_path: Path,
        port: int,
        log_path: Path,
        log_level: str = "info",
        log_format: str = "logfmt",
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__("policyd", config_path, log_path, tcp_ready(port), log_level, log_format, env)
        self.port = port


def decision_lines(log_path: Path) -> list[dict[str, str]]:
    """The decision lines a daemon logged, in either format, as field dicts."""
    out = []
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    for line in text.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            fields = {
                k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in data.items()
            }
        else:
            fields = dict(part.split("=", 1) for part in shlex.split(line) if "=" in part)
        if fields.get("msg") == "decision":
            out.append(fields)
    return out


def wait_for_decision_lines(log_path: Path, count: int, timeout: float = 30) -> list[dict[str, str]]:
    """At least ``count`` decision lines (info lines are buffered for up to a second)."""
    return wait_until(
        lambda: found if len(found := decision_lines(log_path)) >= count else None,
        timeout,
        f"{count} decision lines",
    )


class BaselineProcess(DaemonProcess):
    """A benchmark's stand-in for one of our daemons (benchmarks/noop_milter.py, say):
    ``python SCRIPT ARGS...``, ready when ``ready()`` says so."""

    def __init__(self, script: Path, args: list[str], log_path: Path, ready: Callable[[], bool]) -> None:
        super().__init__(script.stem, Path(), log_path, ready)
        self.script, self.args = script, args

    def argv(self) -> list[str]:
        return [sys.executable, str(self.script), *self.args]


# what systemd does for a .socket unit's service: the listening socket as descriptor 3,
# LISTEN_FDS=1 and LISTEN_PID set to the daemon's own PID (kept across exec)
_ACTIVATE = (
    "import os, sys;"
    "fd = int(sys.argv[1]); os.dup2(fd, 3);"
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()));"
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def held_socket(port: int) -> socket.socket:
    """A listening socket on loopback, held by the caller as systemd holds a .socket unit's."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


class ActivatedPolicyd(DaemonProcess):
    """``smtp-balancer policyd`` started as systemd starts a socket-activated service:
    the test holds the listening socket, as systemd does, across the daemon's restarts."""

    def __init__(self, config_path: Path, listener: socket.socket, log_path: Path) -> None:
        super().__init__("policyd", config_path, log_path, self._started)
        self.listener = listener
        self.pass_fds = (listener.fileno(),)
        self._starts = 0

    def _started(self) -> bool:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text.count("policy service listening on") >= self._starts

    def start(self) -> None:
        self._starts += 1
        super().start()

    def argv(self) -> list[str]:
        return [sys.executable, "-c", _ACTIVATE, str(self.listener.fileno()), *super().argv()]


def process_stat(pid: int) -> tuple[str, str] | None:
    """A process's name and state letter (/proc/PID/stat); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat.rsplit(")", 1)[1].split()[0]


def process_gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet."""
    stat = process_stat(pid)
    return stat is None or stat[1] in ("Z", "X")


class HandingOverPolicyd(PolicydProcess):
    """A policy daemon restarted by SIGUSR2 (policyd/handover.py): each successor is
    a child of the daemon it replaces, so after the first handover the one serving is
    no child of the test; it is tracked, signalled and waited for by its PID."""

    HANDED = re.compile(r"handover: pid (\d+) serves now")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pid: int | None = None

    def start(self) -> None:
        super().start()
        assert self.proc is not None
        self.pid = self.proc.pid

    def handovers(self) -> list[int]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [int(pid) for pid in self.HANDED.findall(text)]

    def hand_over(self, timeout: float = 60) -> int:
        """SIGUSR2, then wait until the successor serves and the old process is gone."""
        assert self.pid is not None
        old, seen = self.pid, len(self.handovers())
        os.kill(old, signal.SIGUSR2)
        pids = wait_until(
            lambda: found if len(found := self.handovers()) > seen else None, timeout, "handover"
        )
        wait_until(lambda: self._reap(old), 30, f"pid {old} to exit after its handover")
        self.pid = pids[-1]
        return self.pid

    def _reap(self, pid: int) -> bool:
        if self.proc is not None and self.proc.pid == pid:
            return self.proc.poll() is not None
        return process_gone(pid)

    def stop(self) -> None:
        pid, self.pid = self.pid, None
        if pid is not None and not self._reap(pid):
            os.kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda: self._reap(pid), 10, f"pid {pid} to stop")
            except WaitTimeout:
                os.kill(pid, signal.SIGKILL)
        super().stop()
