"""End to end: smtp-source -> private Postfix -> smtp-sink, plain against with our policy daemon.

Both variants use the same master.cf (our rendered transports) and the same
sink; the policy variant adds the rendered main.cf policy lines, so every
message costs a RCPT and an END-OF-MESSAGE request and leaves by FILTER.
Rounds alternate plain / policy so drift on the shared machine hits both.
Time runs from the first connection of smtp-source until the Postfix log shows
every message delivered (status=sent).

Run: make bench-e2e
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from integration.conftest import base_config, render  # noqa: E402
from integration.daemons import PolicydProcess  # noqa: E402
from integration.postfix import PostfixInstance, make_shared_dir  # noqa: E402
from integration.redis_server import RedisServer  # noqa: E402
from integration.sink import free_port  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU: dict[str, float] = {}


def run_once(
    base: Path,
    with_policy: bool,
    messages: int,
    sessions: int,
    log_level: str,
    no_rules: bool = False,
    rcpt_join: bool = True,
) -> float:
    redis = RedisServer(base / "redis")
    redis.start()
    sink_port, policy_port, smtpd_port = free_port(), free_port(), free_port()
    sink = subprocess.Popen(
        ["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "1024"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    policyd = None
    postfix = None
    try:
        config = base_config(redis.url, policy_port, 0)
        config["policyd"]["metrics_listen"] = ""
        config["policyd"]["collect_recipients"] = rcpt_join
        if no_rules:
            config["rules"] = []  # diagnostic: the daemon is asked but answers DUNNO (no FILTER)
        config_path = base / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        if with_policy:
            policyd = PolicydProcess(config_path, policy_port, base / "policyd.log", log_level)
            policyd.start()
        postfix = PostfixInstance(
            base / "postfix",
            smtpd_port=smtpd_port,
            sink_port=sink_port,
            master_cf_extra=render(config_path, "master"),
            main_cf_extra=render(config_path, "main") if with_policy else "",
        )
        postfix.start()
        cpu_before = {
            "policyd": cpu_seconds(policyd.proc.pid) if policyd and policyd.proc else 0.0,
            "redis": cpu_seconds(redis.proc.pid) if redis.proc else 0.0,
        }
        started = time.perf_counter()
        subprocess.run(
            [
                "smtp-source",
                "-s",
                str(sessions),
                "-m",
                str(messages),
                "-f",
                "news@shop.test",
                "-t",
                "user@example.test",
                f"127.0.0.1:{smtpd_port}",
            ],
            check=True,
            timeout=600,
        )
        deadline = time.monotonic() + 600
        while postfix.log_text().count("status=sent") < messages:
            if time.monotonic() > deadline:
                raise TimeoutError("not every message was delivered")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        if with_policy and policyd and policyd.proc and redis.proc:
            CPU["policyd"] = CPU.get("policyd", 0.0) + cpu_seconds(policyd.proc.pid) - cpu_before["policyd"]
            CPU["redis"] = CPU.get("redis", 0.0) + cpu_seconds(redis.proc.pid) - cpu_before["redis"]
        log = postfix.log_text()
        if with_policy and not no_rules and "postfix/out" not in log:
            raise RuntimeError("policy variant did not route by FILTER")
        return elapsed
    finally:
        if postfix is not None:
            postfix.stop()
        if policyd is not None:
            policyd.stop()
        if sink.poll() is None:
            os.kill(sink.pid, signal.SIGTERM)
            sink.wait(timeout=5)
        redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20, help="parallel smtp-source sessions")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--log-level", default="info", help="policy daemon log level")
    parser.add_argument(
        "--no-rules",
        action="store_true",
        help="diagnostic: the daemon answers DUNNO (policy round trips without FILTER routing)",
    )
    parser.add_argument(
        "--no-rcpt-join",
        action="store_true",
        help="policyd.collect_recipients off: no RCPT-stage request, one policy request per message",
    )
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    print(
        f"end-to-end benchmark: {args.messages} messages, {args.sessions} smtp-source sessions, "
        f"{args.rounds} rounds alternating"
    )
    for round_no in range(1, args.rounds + 1):
        for with_policy in (False, True):
            base = make_shared_dir("sb-e2e-")
            try:
                elapsed = run_once(
                    base,
                    with_policy,
                    args.messages,
                    args.sessions,
                    args.log_level,
                    args.no_rules,
                    not args.no_rcpt_join,
                )
            finally:
                shutil.rmtree(base, ignore_errors=True)
            times[with_policy].append(elapsed)
            label = "postfix + policyd" if with_policy else "plain postfix"
            print(f"round {round_no}: {label:<18} {elapsed:6.2f}s  {args.messages / elapsed:7.0f} msg/s")
    if CPU:
        total = args.messages * args.rounds
        print(
            f"CPU per message with policyd: daemon {CPU['policyd'] / total * 1e3:.3f} ms,"
            f" redis {CPU['redis'] / total * 1e3:.3f} ms"
            f" ({1 if args.no_rcpt_join else 2} policy request(s) and 1 decision each)"
        )
    plain = sum(times[False]) / len(times[False])
    policy = sum(times[True]) / len(times[True])
    print(
        f"mean: plain {args.messages / plain:.0f} msg/s, with policyd {args.messages / policy:.0f} msg/s, "
        f"ratio {plain / policy:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
