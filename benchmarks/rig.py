"""Pieces the Postfix benchmarks share: smtp-sink, the milter maps, a rendered Postfix."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from integration.conftest import render
from integration.daemons import CLI, DaemonProcess
from integration.postfix import PostfixInstance
from integration.redis_server import RedisServer


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
    """A private Postfix with our rendered master.cf and main.cf lines, started."""
    postfix = PostfixInstance(
        base / "postfix",
        smtpd_port=smtpd_port,
        sink_port=sink_port,
        master_cf_extra=render(config_path, "master"),
        main_cf_extra=render(config_path, "main"),
    )
    postfix.start()
    return postfix


def stop_all(
    postfix: PostfixInstance | None,
    daemon: DaemonProcess | None,
    sink: subprocess.Popen[bytes],
    redis: RedisServer,
) -> None:
    """Tear a run down, newest first."""
    if postfix is not None:
        postfix.stop()
    if daemon is not None:
        daemon.stop()
    stop_process(sink)
    redis.stop()
