"""End to end: smtp-source -> private Postfix -> smtp-sink, plain Postfix against our daemons.

Variants, all measured in the same run, in alternating rounds, so drift on the
shared machine hits each of them:
  plain        Postfix with our rendered master.cf transports, nothing else;
  policyd      plus the policy daemon (RCPT + END-OF-MESSAGE requests, FILTER);
  policyd-shadow  the policy daemon in shadow mode (shadow.config: the same endpoints
               at other weights), against policyd for what shadow mode costs;
  milter-unix  plus the milter on a unix socket (header -> milter_header_checks -> FILTER);
  milter-inet  the same milter on inet:127.0.0.1 (libmilter's small writes meet
               Nagle + delayed ACK there);
  policyd-dunno  baseline: the same main.cf lines, answered by the DUNNO server
               of the protocol benchmark (the price of any policy service);
  policyd-dunno-protocol  the same, answered by a DUNNO server written as an
               asyncio Protocol, as policyd is (benchmarks/dunno_protocol.py): the
               floor of policyd's own design, for telling its I/O from its work;
  milter-noop  baseline: the same milter lines, answered by a pymilter milter
               that does nothing (the price of any pymilter milter).
Time runs from smtp-source's first connection until the Postfix log shows every
message delivered (status=sent).

Run: make bench-e2e (plain, DUNNO baseline, policyd) and make bench-milter
(plain, no-op baseline, our milter on unix and inet)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from rig import rendered_postfix, start_smtp_sink, stop_all, write_maps  # noqa: E402

from integration.conftest import base_config  # noqa: E402
from integration.daemons import (  # noqa: E402
    BaselineProcess,
    DaemonProcess,
    PolicydProcess,
    cpu_seconds,
    tcp_ready,
    unix_ready,
)
from integration.postfix import make_shared_dir  # noqa: E402
from integration.redis_server import RedisServer  # noqa: E402
from integration.sink import free_port  # noqa: E402

VARIANTS = (
    "plain",
    "policyd",
    "policyd-shadow",
    "milter-unix",
    "milter-inet",
    "policyd-dunno",
    "policyd-dunno-protocol",
    "milter-noop",
)


def milter_ms_per_message(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    total = float(re.search(r"^smtp_balancer_milter_eom_duration_seconds_sum (\S+)", text, re.M).group(1))
    count = float(re.search(r"^smtp_balancer_milter_eom_duration_seconds_count (\S+)", text, re.M).group(1))
    return 1000 * total / count if count else float("nan")


class Result:
    def __init__(self, elapsed: float, cpu: dict[str, float], milter_ms: float | None) -> None:
        self.elapsed, self.cpu, self.milter_ms = elapsed, cpu, milter_ms


def run_once(base: Path, variant: str, args: argparse.Namespace) -> Result:
    redis = RedisServer(base / "redis")
    redis.start()
    sink_port, policy_port, smtpd_port = free_port(), free_port(), free_port()
    milter_metrics = free_port()
    sink = start_smtp_sink(sink_port)
    daemon: DaemonProcess | None = None
    postfix = None
    try:
        config = base_config(redis.url, policy_port, 0)
        config["policyd"].update(
            {
                "metrics_listen": "",
                "enabled": variant.startswith("policyd"),
                "collect_recipients": not args.no_rcpt_join,
            }
        )
        milter_socket = base / "milter" / "milter.sock"
        milter_port = free_port()
        config["milter"] = {
            "enabled": variant.startswith("milter"),
            "listen": f"inet:127.0.0.1:{milter_port}"
            if variant == "milter-inet"
            else f"unix:{milter_socket}",
            "postfix_maps_dir": str(base / "maps"),
            "metrics_listen": f"127.0.0.1:{milter_metrics}",
        }
        if args.no_rules:
            config["rules"] = []  # diagnostic: the daemon is asked but routes nothing
        config_path = base / "config.yaml"
        if variant == "policyd-shadow":
            weights = [{"endpoint": ep, "weight": w} for ep, w in (("out1", 3), ("out2", 1), ("out3", 1))]
            candidate = {**config, "pools": {"main": {"endpoints": weights}}}
            (base / "candidate.yaml").write_text(yaml.safe_dump(candidate))
            config["shadow"] = {"config": "candidate.yaml"}
        config_path.write_text(yaml.safe_dump(config))
        if variant in ("policyd", "policyd-shadow"):
            daemon = PolicydProcess(config_path, policy_port, base / "daemon.log", args.log_level)
        elif variant in ("policyd-dunno", "policyd-dunno-protocol"):
            server = "dunno_server.py" if variant == "policyd-dunno" else "dunno_protocol.py"
            daemon = BaselineProcess(
                HERE / server, [str(policy_port)], base / "daemon.log", tcp_ready(policy_port)
            )
        elif variant.startswith("milter"):
            write_maps(config_path, base / "maps")
            ready = tcp_ready(milter_port) if variant == "milter-inet" else unix_ready(milter_socket)
            if variant == "milter-noop":
                milter_socket.parent.mkdir(parents=True, exist_ok=True)
                daemon = BaselineProcess(
                    HERE / "noop_milter.py", [f"unix:{milter_socket}"], base / "daemon.log", ready
                )
            else:
                daemon = DaemonProcess("milter", config_path, base / "daemon.log", ready, args.log_level)
        if daemon is not None:
            daemon.start()
        postfix = rendered_postfix(base, config_path, smtpd_port, sink_port)
        pids = {"daemon": daemon.proc.pid if daemon and daemon.proc else None, "redis": redis.proc.pid}
        before = {k: cpu_seconds(p) for k, p in pids.items() if p}
        started = time.perf_counter()
        subprocess.run(
            [
                "smtp-source",
                "-s",
                str(args.sessions),
                "-m",
                str(args.messages),
                "-f",
                "news@shop.test",
                "-t",
                "user@example.test",
                f"127.0.0.1:{postfix.smtpd_port}",
            ],
            check=True,
            timeout=600,
        )
        deadline = time.monotonic() + 600
        while postfix.log_text().count("status=sent") < args.messages:
            if time.monotonic() > deadline:
                raise TimeoutError("not every message was delivered")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = {k: cpu_seconds(p) - before[k] for k, p in pids.items() if p}
        ours = variant in ("policyd", "milter-unix", "milter-inet")
        if ours and not args.no_rules and "postfix/out" not in postfix.log_text():
            raise RuntimeError(f"{variant}: mail did not leave by our transports")
        if variant == "policyd-shadow" and "shadow_endpoint=" not in (base / "daemon.log").read_text():
            raise RuntimeError(f"{variant}: no decision line carries a shadow decision")
        ours_milter = variant in ("milter-unix", "milter-inet")
        milter_ms = milter_ms_per_message(milter_metrics) if ours_milter else None
        return Result(elapsed, cpu, milter_ms)
    finally:
        stop_all(postfix, daemon, sink, redis)


def settle(seconds: float) -> None:
    """Let the last run's teardown (deleted queue files, exiting processes) finish."""
    os.sync()
    time.sleep(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", default="plain,policyd", help=f"comma-separated, from {', '.join(VARIANTS)}"
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20, help="parallel smtp-source sessions")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of quiet before each run")
    parser.add_argument("--log-level", default="info", help="daemon log level")
    parser.add_argument(
        "--no-rules", action="store_true", help="diagnostic: daemons consulted, nothing routed"
    )
    parser.add_argument(
        "--no-rcpt-join",
        action="store_true",
        help="policyd.collect_recipients off: no RCPT-stage request, one policy request per message",
    )
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    results: dict[str, list[Result]] = {v: [] for v in variants}
    print(
        f"end-to-end benchmark: {args.messages} messages, {args.sessions} smtp-source sessions, "
        f"{args.rounds} rounds alternating {', '.join(variants)}"
    )
    for round_no in range(1, args.rounds + 1):
        # each round starts with the next variant: the first run of a round tends to
        # be the fastest (nothing left over from a previous run), and that must not
        # always favour the same variant
        start = (round_no - 1) % len(variants)
        for variant in variants[start:] + variants[:start]:
            settle(args.settle)
            base = make_shared_dir("sb-e2e-")
            try:
                result = run_once(base, variant, args)
            finally:
                shutil.rmtree(base, ignore_errors=True)
            results[variant].append(result)
            extra = ""
            if result.milter_ms is not None:
                extra = f"  milter {result.milter_ms:.2f} ms/msg at end of message"
            print(
                f"round {round_no}: {variant:<12} {result.elapsed:6.2f}s  "
                f"{args.messages / result.elapsed:6.0f} msg/s{extra}"
            )
    mean = {v: sum(r.elapsed for r in rs) / len(rs) for v, rs in results.items()}
    base_time = mean[variants[0]]
    for variant in variants:
        cpu = results[variant]
        daemon_cpu = sum(r.cpu.get("daemon", 0.0) for r in cpu) / (args.messages * len(cpu)) * 1e3
        redis_cpu = sum(r.cpu.get("redis", 0.0) for r in cpu) / (args.messages * len(cpu)) * 1e3
        print(
            f"mean {variant:<12} {args.messages / mean[variant]:6.0f} msg/s  ratio to {variants[0]} "
            f"{base_time / mean[variant]:.2f}  CPU/msg: daemon {daemon_cpu:.3f} ms, redis {redis_cpu:.3f} ms"
        )
    # medians: one slow round (the shared machine) moves a mean, not a median
    rate = {v: statistics.median(args.messages / r.elapsed for r in rs) for v, rs in results.items()}
    cpu_ms = {
        v: statistics.median(r.cpu.get("daemon", 0.0) / args.messages * 1e3 for r in rs)
        for v, rs in results.items()
    }
    baseline = "policyd-dunno" if "policyd-dunno" in variants else variants[0]
    for variant in variants:
        print(
            f"median {variant:<12} {rate[variant]:6.0f} msg/s  ratio to {baseline} "
            f"{rate[variant] / rate[baseline]:.2f}  daemon CPU/msg {cpu_ms[variant]:.3f} ms"
            + (f" ({cpu_ms[variant] / cpu_ms[baseline]:.2f}x {baseline})" if cpu_ms[baseline] else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
