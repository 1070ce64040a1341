"""Restarts under load: what restarting policyd every few seconds costs Postfix's intake.

Real Postfix (the rendered config), Redis and smtp-sink; eight SMTP clients submit
without pause over persistent sessions. Each mode runs a steady phase (no
restarts), then a phase in which policyd is restarted (SIGTERM, then started
again) every ``--every`` seconds. Modes:
  - activated: the listening socket is held across restarts, as systemd holds a
    .socket unit's (LISTEN_FDS), so connections wait in its backlog;
  - self-bound: the daemon binds its own socket, gone while it restarts;
  - stopped: self-bound, stopped for good at the start of the second phase (no
    socket at all: every try refused), what a daemon that will not come back costs;
  - handover: restarted by SIGUSR2 (policyd/handover.py): the running daemon hands
    its listening socket and open connections to the new process, so smtpd's
    connections stay open and no retry delay is paid.
Printed per mode: messages accepted per second in each phase and their ratio (the
baseline is the same daemon without restarts, measured in the same run), and
messages Postfix delivered by its default transport (decided by nobody: every
try of their request found no daemon, or timed out). Postfix logs nothing for a
refused try that its retry (try_limit=2, 1 s later) then gets answered.

Run: make bench-restart   (bounded: about 2 x (--warmup + --steady + --restarting) s)
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rig import Submitters, rendered_postfix, start_smtp_sink, stop_all  # noqa: E402

from integration.conftest import base_config  # noqa: E402
from integration.daemons import (  # noqa: E402
    ActivatedPolicyd,
    DaemonProcess,
    HandingOverPolicyd,
    PolicydProcess,
    held_socket,
)
from integration.postfix import PostfixInstance, make_shared_dir  # noqa: E402
from integration.redis_server import RedisServer  # noqa: E402
from integration.sink import free_port  # noqa: E402

DEFAULT_ROUTE = re.compile(r"postfix/smtp\[\d+\]: \w+: to=<.*status=sent")


def run(mode: str, args: argparse.Namespace) -> None:
    base = make_shared_dir("sb-restart-")
    redis = RedisServer(base / "redis")
    redis.start()
    sink_port, policy_port, smtpd_port = free_port(), free_port(), free_port()
    sink = start_smtp_sink(sink_port)
    daemon: DaemonProcess | None = None
    postfix: PostfixInstance | None = None
    listener: socket.socket | None = None
    try:
        config = base_config(redis.url, policy_port, 0)
        config["policyd"].update({"metrics_listen": ""})
        config["policyd"].pop("postfix_timeout_s", None)  # the rendered defaults
        path = base / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        if mode == "activated":
            listener = held_socket(policy_port)
            daemon = ActivatedPolicyd(path, listener, base / "daemon.log")
        elif mode == "handover":  # info: the harness follows the handover lines
            daemon = HandingOverPolicyd(path, policy_port, base / "daemon.log", "info")
        else:
            daemon = PolicydProcess(path, policy_port, base / "daemon.log", "warning")
        daemon.start()
        postfix = rendered_postfix(base, path, smtpd_port, sink_port)
        clients = Submitters(postfix.smtpd_port, args.clients)
        time.sleep(args.warmup)
        steady_at = time.monotonic()
        time.sleep(args.steady)
        restarting_at = time.monotonic()
        restarts = 0
        if mode == "stopped":
            daemon.stop()
            time.sleep(args.restarting)
        while mode != "stopped" and time.monotonic() < restarting_at + args.restarting:
            time.sleep(args.every)
            if isinstance(daemon, HandingOverPolicyd):
                daemon.hand_over()
            else:
                daemon.stop()
                daemon.start()
            restarts += 1
        ended_at = time.monotonic()
        clients.stop()
        done = clients.done
        log = postfix.log_text()
        by_default = len(DEFAULT_ROUTE.findall(log))
        steady = sum(steady_at <= end < restarting_at for _, end in done) / (restarting_at - steady_at)
        during = sum(restarting_at <= end < ended_at for _, end in done) / (ended_at - restarting_at)
        worst = max((end - begin for begin, end in done), default=0.0)
        every = f"{restarts} restarts, one every {args.every:.0f}s"
        what = "stopped for good" if mode == "stopped" else every
        print(f"\n{mode}: {args.clients} clients, {what}")
        print(f"  steady       {steady:8.1f} msg/s")
        phase = "stopped" if mode == "stopped" else "restarting"
        print(f"  {phase:<12} {during:8.1f} msg/s   ratio {during / steady:.2f}")
        print(f"  delivered by the default transport: {by_default}")
        print(f"  longest submission {worst:.2f}s")
    finally:
        stop_all(postfix, daemon, sink, redis)
        if listener is not None:
            listener.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="policyd restarted under load")
    parser.add_argument("--modes", default="handover,activated,self-bound")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--steady", type=float, default=20.0)
    parser.add_argument("--restarting", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=5.0)
    args = parser.parse_args()
    for mode in args.modes.split(","):
        run(mode, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
