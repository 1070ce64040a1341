"""Policy protocol throughput: our daemon against a DUNNO ceiling and policyd-rate-limit.

N persistent connections (N = 1, 10, 100), each sending one full request at a
time and waiting for the answer, the way Postfix's smtpd does. All servers run
as separate processes on loopback, and the load generator is a separate
process too. Each level is bounded by a request count and a time limit.

  - smtp-balancer policyd: END-OF-MESSAGE requests with a decision each
    (private redis-server on a unix socket, 3 endpoints, 1 warming), and one
    decision line logged per request at the default level;
  - smtp-balancer RCPT: the same daemon asked at RCPT (parse, join, DUNNO, no
    decision): what the server costs apart from deciding;
  - ceiling: benchmarks/dunno_server.py, a minimal asyncio server answering DUNNO;
  - with --compare-limits, smtp-balancer+limits: the same daemon and Redis with a
    per-provider warm-up cap, a rate cap (both for gmail, never reached) and an
    adaptive factor (0.5 for out1 x gmail) in force;
  - policyd-rate-limit 1.2.0 (PyPI), sqlite backend, limiting by client IP. It
    counts at the DATA stage (count_mode 1), so it gets DATA requests, where it
    does its work.

Run: make bench-policy  (installs policyd-rate-limit into .bench-venv first)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from integration.daemons import PolicydProcess, cpu_seconds  # noqa: E402
from integration.redis_server import RedisServer  # noqa: E402
from integration.sink import free_port  # noqa: E402
from smtp_balancer.generation import MARKER  # noqa: E402


def request(state: str, i: int) -> bytes:
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": "127.0.0.9",
        "client_name": "client.test",
        "helo_name": "client.test",
        "sender": f"news{i % 50}@shop.test",
        "recipient": f"user{i}@gmail.com",
        "recipient_count": "1",
        "queue_id": f"Q{i:08X}",
        "instance": f"{os.getpid()}.{i}.0",
        "size": "12345",
        "sasl_method": "",
        "sasl_username": "",
        "ccert_subject": "",
        "encryption_protocol": "",
        "policy_context": MARKER,  # as the rendered check_policy_service sends it
    }
    return ("".join(f"{k}={v}\n" for k, v in attrs.items()) + "\n").encode()


async def load(
    port: int, conns: int, total: int, seconds: float, state: str
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    counter = 0
    stop_at = time.monotonic() + seconds
    payloads = [request(state, i) for i in range(1000)]

    async def client() -> None:
        nonlocal counter
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while counter < total and time.monotonic() < stop_at:
                counter += 1
                t0 = time.perf_counter()
                writer.write(payloads[counter % 1000])
                await writer.drain()
                reply = await reader.readuntil(b"\n\n")
                latencies.append(time.perf_counter() - t0)
                if not reply.startswith(b"action="):
                    raise RuntimeError(f"bad reply {reply!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(conns)))
    return time.perf_counter() - started, latencies, len(latencies)


def trouble(log: Path | None, most: int = 5) -> list[str]:
    """The last warnings and errors in a daemon's log (its work dir is removed at exit)."""
    if log is None or not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    return [line[:400] for line in lines if "level=error" in line or "level=warning" in line][-most:]


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def start_prl(python: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = {
        "debug": False,
        "user": "root",
        "group": "root",
        "pidfile": str(workdir / "prl.pid"),
        "sqlite_config": {"database": str(workdir / "prl.sqlite3")},
        "backend": 0,
        "SOCKET": ["127.0.0.1", port],
        "limits": [[10_000_000, 60], [100_000_000, 86400]],
        "limits_by_id": {},
        "sql_limits_by_id": "",
        "limit_by_sasl": False,
        "limit_by_sender": False,
        "limit_by_ip": True,
        "limited_networks": ["127.0.0.0/8"],
        "success_action": "dunno",
        "fail_action": "defer_if_permit Rate limit reach, retry later",
        "db_error_action": "dunno",
        "report": False,
        "delay_to_close": 300,
        "count_mode": 1,
    }
    path = workdir / "prl.yaml"
    path.write_text(yaml.safe_dump(config))
    bindir = Path(python).parent
    proc = subprocess.Popen(
        [str(bindir / "policyd-rate-limit"), "--file", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc, "policyd-rate-limit")
    return proc, port


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 2 else float("nan")


def print_ratios(
    results: dict[tuple[str, int], tuple[float, float]], levels: list[int], compare_log_level: str | None
) -> None:
    for conns in levels:
        if ("smtp-balancer", conns) not in results or ("ceiling", conns) not in results:
            continue
        ours_rate = results[("smtp-balancer", conns)][0]
        line = f"N={conns:<3} ours/ceiling = {ours_rate / results[('ceiling', conns)][0]:.2f}"
        if ("smtp-balancer RCPT", conns) in results:
            rcpt = results[("smtp-balancer RCPT", conns)][0] / results[("ceiling", conns)][0]
            line += f"   ours RCPT/ceiling = {rcpt:.2f}"
        if (f"smtp-balancer@{compare_log_level}", conns) in results:
            other_rate = results[(f"smtp-balancer@{compare_log_level}", conns)][0]
            line += f"   ours/ours@{compare_log_level} = {ours_rate / other_rate:.2f}"
        for variant in ("limits", "experiment"):
            if (f"smtp-balancer+{variant}", conns) in results:
                ratio = results[(f"smtp-balancer+{variant}", conns)][0] / ours_rate
                line += f"   ours+{variant}/ours = {ratio:.2f}"
        if ("policyd-rate-limit", conns) in results:
            line += (
                f"   ours/policyd-rate-limit = {ours_rate / results[('policyd-rate-limit', conns)][0]:.2f}"
            )
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description="policy protocol throughput benchmark")
    parser.add_argument("--requests", type=int, default=20_000, help="per level and server (default 20000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="time limit per level and server")
    parser.add_argument(
        "--log-level", default="info", help="our daemon's log level (info logs every decision)"
    )
    parser.add_argument(
        "--compare-log-level",
        help="also measure a second daemon at this log level, side by side (e.g. warning: no decision lines)",
    )
    parser.add_argument(
        "--compare-limits",
        action="store_true",
        help="also measure a second daemon with a per-provider warm-up cap, a rate cap (never"
        " reached) and an adaptive factor in force, side by side",
    )
    parser.add_argument(
        "--compare-experiment",
        action="store_true",
        help="also measure a second daemon with an A/B experiment running on its one rule, side by side",
    )
    parser.add_argument("--levels", default="1,10,100", help="connection counts (default 1,10,100)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every level this many times; ratios per round and median",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="policyd.workers for our daemon (its CPU is the supervisor's and the workers')",
    )
    parser.add_argument("--prl-python", default=str(ROOT / ".bench-venv" / "bin" / "python"))
    args = parser.parse_args()

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        work = Path(tmp)
        redis = RedisServer(work / "redis")
        redis.start()
        ours = None
        others: list[PolicydProcess] = []
        try:
            today = datetime.now(UTC).date().isoformat()
            ours_port = free_port()
            config = {
                "redis": {"url": redis.url, "connect_timeout_ms": 2000, "max_connections": 256},
                "decision": {"budget_ms": 2000},
                "mx_lookup": {"enabled": False},
                "policyd": {
                    "listen": [f"inet:127.0.0.1:{ours_port}"],
                    "metrics_listen": "",
                    "workers": args.workers,
                },
                "endpoints": {
                    "out1": {"bind_address": "127.0.0.2"},
                    "out2": {"bind_address": "127.0.0.3"},
                    "out3": {"bind_address": "127.0.0.4", "warmup": {"start": today, "schedule": "fast"}},
                },
                "pools": {
                    "main": {"endpoints": [{"endpoint": e, "weight": 1} for e in ("out1", "out2", "out3")]}
                },
                "rules": [{"name": "all", "pool": "main"}],
            }
            (work / "config.yaml").write_text(yaml.safe_dump(config))
            ours = PolicydProcess(work / "config.yaml", ours_port, work / "policyd.log", args.log_level)
            ours.start()
            server_logs = {"smtp-balancer": work / "policyd.log", "smtp-balancer RCPT": work / "policyd.log"}
            # our daemon logs one INFO line per decision, as it would in production
            dunno_port = free_port()
            dunno = subprocess.Popen(
                [sys.executable, str(ROOT / "benchmarks" / "dunno_server.py"), str(dunno_port)]
            )
            procs.append(dunno)
            wait_port(dunno_port, dunno, "DUNNO server")
            ours_pid = ours.proc.pid if ours.proc else 0
            # (name, port, protocol stage sent, server PID for its CPU time)
            servers = [
                ("smtp-balancer", ours_port, "END-OF-MESSAGE", ours_pid),
                # the same daemon asked at RCPT: parsing, joining and answering, no decision
                ("smtp-balancer RCPT", ours_port, "RCPT", ours_pid),
                ("ceiling", dunno_port, "END-OF-MESSAGE", dunno.pid),
            ]

            def side_by_side(name: str, variant: dict, log_level: str) -> None:
                """Another daemon on the same Redis, measured right after ours."""
                port = free_port()
                variant = yaml.safe_load(yaml.safe_dump(variant))
                variant["policyd"]["listen"] = [f"inet:127.0.0.1:{port}"]
                path = work / f"config-{len(others)}.yaml"
                path.write_text(yaml.safe_dump(variant))
                other = PolicydProcess(path, port, work / f"policyd-{len(others)}.log", log_level)
                server_logs[name] = work / f"policyd-{len(others)}.log"
                other.start()
                others.append(other)
                servers.insert(1, (name, port, "END-OF-MESSAGE", other.proc.pid if other.proc else 0))

            if args.compare_log_level:
                # the same daemon and Redis, another log level: what the decision lines cost
                side_by_side(f"smtp-balancer@{args.compare_log_level}", config, args.compare_log_level)
            if args.compare_limits:
                # limits that bind nothing: what checking them costs
                limited = yaml.safe_load(yaml.safe_dump(config))
                limited["endpoints"]["out3"]["warmup"]["providers"] = {"google": [10**6] * 10}
                limited["endpoints"]["out2"]["rate_caps"] = {"google": 10**6}
                limited["pools"]["main"]["adaptive"] = True
                # an adaptive factor in force (only adaptive pools read it)
                import redis as redis_py

                with redis_py.Redis.from_url(redis.url) as client:
                    client.set("{sb}:adaptive:out1:google", "0.5 deferred 15% of 200 in 5m", ex=3600)
                side_by_side("smtp-balancer+limits", limited, args.log_level)
            if args.compare_experiment:
                # every message drawn into one of two arms, recorded by queue id
                variant = yaml.safe_load(yaml.safe_dump(config))
                variant["pools"]["other"] = variant["pools"]["main"]
                variant["experiments"] = [
                    {
                        "name": "bench",
                        "rule": "all",
                        "arms": [
                            {"name": "a", "pool": "main", "split": 50},
                            {"name": "b", "pool": "other", "split": 50},
                        ],
                    }
                ]
                import redis as redis_py

                with redis_py.Redis.from_url(redis.url) as client:
                    client.hset("{sb}:experiment:bench", mapping={"state": "running", "started": "0"})
                side_by_side("smtp-balancer+experiment", variant, args.log_level)
            if Path(args.prl_python).exists():
                prl, prl_port = start_prl(args.prl_python, work)
                procs.append(prl)
                servers.append(("policyd-rate-limit", prl_port, "DATA", prl.pid))
            else:
                print(f"(policyd-rate-limit not installed at {args.prl_python}: run make bench-policy)")

            print(
                f"policy benchmark: up to {args.requests} requests or {args.seconds:.0f}s"
                " per level and server"
            )
            print("CPU us/req: the server process's CPU time (from /proc) per request answered")
            print(f"{'server':<20} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10}")
            levels = [int(n) for n in args.levels.split(",")]
            per_round: list[dict[tuple[str, int], tuple[float, float]]] = []
            for _ in range(args.rounds):
                results: dict[tuple[str, int], tuple[float, float]] = {}  # req/s, CPU us/req
                for conns in levels:
                    for name, port, state, pid in servers:
                        cpu_before = cpu_seconds(pid)
                        try:
                            elapsed, lat, done = asyncio.run(
                                load(port, conns, args.requests, args.seconds, state)
                            )
                        except (ConnectionError, asyncio.IncompleteReadError) as exc:
                            # name the server that dropped us, and what its log says
                            print(f"{name:<20} {conns:>5}  failed: {exc!r}")
                            for line in trouble(server_logs.get(name)):
                                print(f"    {line}")
                            continue
                        cpu_us = 1e6 * (cpu_seconds(pid) - cpu_before) / max(done, 1)
                        rate = done / elapsed
                        results[(name, conns)] = (rate, cpu_us)
                        print(
                            f"{name:<20} {conns:>5} {rate:>8.0f} {pct(lat, 50):>7.2f} {pct(lat, 99):>7.2f}"
                            f" {cpu_us:>10.1f}"
                        )
                per_round.append(results)
                print()
                print_ratios(results, levels, args.compare_log_level)
                print()
            variants = [
                v
                for v, on in (("limits", args.compare_limits), ("experiment", args.compare_experiment))
                if on
            ]
            for variant_name in variants if args.rounds > 1 else ():
                for conns in levels:
                    key = (f"smtp-balancer+{variant_name}", conns)
                    ratios = [r[key][0] / r[("smtp-balancer", conns)][0] for r in per_round if key in r]
                    cpu = [r[("smtp-balancer", conns)][1] / r[key][1] for r in per_round if key in r]
                    if ratios:
                        print(
                            f"N={conns:<3} ours+{variant_name}/ours over {len(ratios)} rounds: median "
                            f"{statistics.median(ratios):.2f} (req/s), {statistics.median(cpu):.2f}"
                            f" (CPU per request, ours/ours+{variant_name}); rounds"
                            f" {', '.join(f'{x:.2f}' for x in ratios)}"
                        )
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        os.kill(proc.pid, signal.SIGKILL)
            if ours is not None:
                ours.stop()
            for other in others:
                other.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
