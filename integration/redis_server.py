"""A real, private redis-server for tests: unix socket, no persistence, killed by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from integration.waits import START_S


def real_time_env() -> dict[str, str]:
    """This environment without libfaketime: redis-server stops at start under it
    ("recursive calls to clock_gettime()"), and Redis only needs relative time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKETIME")}
    preload = " ".join(p for p in env.pop("LD_PRELOAD", "").split() if "faketime" not in p)
    if preload:
        env["LD_PRELOAD"] = preload
    return env


class RedisServer:
    def __init__(
        self, workdir: Path, extra: dict[str, str | list[str]] | None = None, password: str | None = None
    ) -> None:
        """``extra``: more redis-server options (a list value is several words, as for --user)."""
        self.extra = extra or {}
        self.password = password
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "redis.sock"
        self.pidfile = workdir / "redis.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        # not --daemonize: we keep the Popen so we can kill exactly our PID
        args: dict[str, str | list[str]] = {
            "port": "0",
            "unixsocket": str(self.socket),
            "unixsocketperm": "770",
            "save": "",
            "appendonly": "no",
            "dir": str(self.workdir),
            "pidfile": str(self.pidfile),
            "loglevel": "warning",
            "logfile": str(self.workdir / "redis.log"),
            # tests simulate a slow Redis with DEBUG SLEEP over the unix socket
            "enable-debug-command": "local",
            **self.extra,
        }
        if self.password:
            args["requirepass"] = self.password
        self.proc = subprocess.Popen(
            [
                binary,
                *(word for k, v in args.items() for word in (f"--{k}", *([v] if isinstance(v, str) else v))),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=real_time_env(),
        )
        deadline = time.monotonic() + START_S
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1, password=self.password)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (
                    redis.ConnectionError,
                    redis.TimeoutError,
                    FileNotFoundError,
                    redis.AuthenticationError,
                ):
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (
                        (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                        if (self.workdir / "redis.log").exists()
                        else ""
                    )
                    self.stop()
                    raise RuntimeError(f"redis-server did not start: {log}")
                time.sleep(0.01)
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(
            unix_socket_path=str(self.socket), socket_timeout=5, decode_responses=True, password=self.password
        )

    def stop(self) -> None:
        """Kill our redis-server (SIGKILL: tests model a crash, and it is fastest)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        self.socket.unlink(missing_ok=True)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Redis takes requests and answers none until the block ends (SIGSTOP, then
        SIGCONT): a busy or stalled Redis, with no guess at when a stand-in command
        such as DEBUG SLEEP starts or ends."""
        assert self.proc is not None and self.proc.poll() is None, "redis-server is not running"
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
