"""A frozen daemon under load: what it costs Postfix's clients, with the rendered timeouts.

Real Postfix, Redis and smtp-sink; eight SMTP clients submit without pause, each
over one persistent session, as applications do. After a warm-up the daemon is
stopped (SIGSTOP) for ``--freeze`` seconds, then continued. Printed per phase
(before, frozen, after): messages accepted per second, as a ratio to before,
and the submission time per message (p50 and max), against the bound the
rendered timeouts give:
  - policyd: RCPT and END-OF-MESSAGE each wait ``timeout`` twice (try_limit=2)
    plus Postfix's 1 s retry delay: 2 x (2 x 3 s + 1 s) = 14 s per message;
  - milter: a new session waits the connect timeout (1 s), and a message its
    command (3 s) and content (10 s) timeouts: 13 s per message at most, in a
    session that was already open.

Run: make bench-freeze   (bounded: --warmup + --freeze + --after seconds per daemon)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rig import Submitters, rendered_postfix, start_smtp_sink, stop_all, write_maps  # noqa: E402

from integration.conftest import base_config  # noqa: E402
from integration.daemons import DaemonProcess, PolicydProcess, unix_ready  # noqa: E402
from integration.postfix import PostfixInstance, make_shared_dir  # noqa: E402
from integration.redis_server import RedisServer  # noqa: E402
from integration.sink import free_port  # noqa: E402

BOUND_S = {"policyd": 14.0, "milter": 13.0}


def run(daemon_kind: str, args: argparse.Namespace) -> None:
    base = make_shared_dir("sb-freeze-")
    redis = RedisServer(base / "redis")
    redis.start()
    sink_port, policy_port, smtpd_port = free_port(), free_port(), free_port()
    sink = start_smtp_sink(sink_port)
    daemon: DaemonProcess | None = None
    postfix: PostfixInstance | None = None
    try:
        config = base_config(redis.url, policy_port, 0)
        # the rendered defaults, which this benchmark is about
        config["policyd"].update({"enabled": daemon_kind == "policyd", "metrics_listen": ""})
        config["policyd"].pop("postfix_timeout_s", None)
        milter_socket = base / "milter" / "milter.sock"
        config["milter"] = {
            "enabled": daemon_kind == "milter",
            "listen": f"unix:{milter_socket}",
            "postfix_maps_dir": str(base / "maps"),
            "metrics_listen": "",
        }
        path = base / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        if daemon_kind == "policyd":
            daemon = PolicydProcess(path, policy_port, base / "daemon.log", "warning")
        else:
            write_maps(path, base / "maps")
            daemon = DaemonProcess("milter", path, base / "daemon.log", unix_ready(milter_socket), "warning")
        daemon.start()
        postfix = rendered_postfix(base, path, smtpd_port, sink_port)
        clients = Submitters(postfix.smtpd_port, args.clients)
        time.sleep(args.warmup)
        assert daemon.proc is not None
        frozen_at = time.monotonic()
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        time.sleep(args.freeze)
        os.kill(daemon.proc.pid, signal.SIGCONT)
        thawed_at = time.monotonic()
        time.sleep(args.after)
        clients.stop()
        report(daemon_kind, clients.done, frozen_at, thawed_at, args)
    finally:
        stop_all(postfix, daemon, sink, redis)


def report(
    kind: str, done: list[tuple[float, float]], frozen_at: float, thawed_at: float, args: argparse.Namespace
) -> None:
    start = frozen_at - args.warmup + 2  # the first 2 s warm the sessions up
    phases = {
        "before": (start, frozen_at),
        "frozen": (frozen_at, thawed_at),
        "after": (thawed_at, thawed_at + args.after),
    }
    rates: dict[str, float] = {}
    print(f"\n{kind}: frozen {args.freeze:.0f}s, {args.clients} clients, rendered timeouts")
    print(f"{'phase':<8} {'msg/s':>8} {'ratio':>6} {'p50 s':>7} {'max s':>7}")
    for name, (lo, hi) in phases.items():
        # a message belongs to the phase it ended in: what clients got done then
        spans = [end - begin for begin, end in done if lo <= end < hi]
        rates[name] = len(spans) / (hi - lo)
        p50 = statistics.median(spans) if spans else float("nan")
        worst = max(spans) if spans else float("nan")
        ratio = rates[name] / rates["before"] if rates.get("before") else float("nan")
        print(f"{name:<8} {rates[name]:>8.1f} {ratio:>6.2f} {p50:>7.3f} {worst:>7.2f}")
    worst_all = max((end - begin for begin, end in done), default=0.0)
    print(f"longest submission {worst_all:.2f}s; bound from the rendered timeouts {BOUND_S[kind]:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description="a frozen daemon under load")
    parser.add_argument("--daemons", default="policyd,milter")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=12.0)
    parser.add_argument("--freeze", type=float, default=30.0)
    parser.add_argument("--after", type=float, default=10.0)
    args = parser.parse_args()
    for kind in args.daemons.split(","):
        run(kind, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
