"""Pieces the Postfix benchmarks share: smtp-sink, the milter maps, a rendered Postfix,
SMTP clients that submit without pause."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path

from integration.conftest import rendered_postfix as started_postfix
from integration.daemons import CLI, DaemonProcess
from integration.postfix import PostfixInstance
from integration.redis_server import RedisServer
from integration.submit import build_message


def start_smtp_sink(port: int) -> subprocess.Popen[bytes]:
    """Postfix's smtp-sink: accepts everything, as fast as anything can."""
    return subprocess.Popen(
        ["smtp-sink", "-u", "postfix", f"127.0.0.1:{port}", "1024"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)


def write_maps(config_path: Path, directory: Path) -> None:
    subprocess.run(
        [CLI, "-c", str(config_path), "render", "postfix", "--write-maps", str(directory)],
        check=True,
        capture_output=True,
    )


def rendered_postfix(base: Path, config_path: Path, smtpd_port: int, sink_port: int) -> PostfixInstance:
    """A private Postfix with our rendered master.cf and main.cf lines, started (the
    run's own teardown stops it: ``stop_all``)."""
    return started_postfix(base, config_path, sink_port, [], smtpd_port)


def stop_all(
    postfix: PostfixInstance | None,
    daemon: DaemonProcess | None,
    sink: subprocess.Popen[bytes],
    redis: RedisServer,
) -> None:
    """Tear a run down, newest first; a part that fails to stop does not keep the others
    running."""
    try:
        if postfix is not None:
            postfix.stop()
    finally:
        try:
            if daemon is not None:
                daemon.stop()
        finally:
            try:
                stop_process(sink)
            finally:
                redis.stop()


def submit(port: int, stop: threading.Event, out: list[tuple[float, float]], worker: int) -> None:
    """Messages over one session until told to stop; (start, end) of each, monotonic."""
    i = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
                while not stop.is_set():
                    started = time.monotonic()
                    msg = build_message(worker * 1_000_000 + i, "news@shop.test", [f"u{i}@example.test"])
                    smtp.send_message(msg, "news@shop.test", [f"u{i}@example.test"])
                    out.append((started, time.monotonic()))
                    i += 1
        except (smtplib.SMTPException, OSError):
            time.sleep(0.1)


class Submitters:
    """``count`` clients submitting to ``port`` over persistent sessions, as applications
    do; ``done`` holds (start, end) of each message, monotonic."""

    def __init__(self, port: int, count: int) -> None:
        self.done: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=submit, args=(port, self._stop, self.done, w), daemon=True)
            for w in range(count)
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)
