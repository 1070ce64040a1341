"""One Redis for a fleet: what N deciders cost it, and how many it carries.

N deciders (the real engine, each with its own Redis connections, mirror and quota
leases, as each host's policy daemon has) share one private redis-server, spread
over a few processes. Together they decide at a set fleet rate, in local mode
(``decision.local: true``, the default) or in Redis-script mode (one select.lua per
decision). Real feedback daemons read Postfix log lines written at the matching
delivery rate and apply them to the same Redis. Per (N, mode) it prints:
  - Redis CPU per decision (INFO's used_cpu_user + used_cpu_sys over the measured
    window, the feedback daemons' writes included; --feedback-daemons 0 leaves them
    out), and the commands Redis spent most time in (commandstats, per decision);
  - the fleet decisions/s at which Redis would use one whole core at that cost;
  - decision latency p50 and p99 (what a policy request waits for its route);
  - Redis memory (used_memory) at the end.
A warming endpoint with a day cap and a rate-capped one keep the leases busy; the
cap is checked at the end (Redis's count never above it).

Bounded: --seconds per row after --warmup, a fixed rate. Run: make bench-fleet
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from integration.daemons import DaemonProcess, tcp_ready  # noqa: E402
from integration.redis_server import RedisServer  # noqa: E402
from integration.sink import free_port  # noqa: E402

ENDPOINTS = ("out1", "out2", "out3", "out4")
PROVIDERS = ("gmail.com", "outlook.com", "yahoo.com", "example.org", "web.de")
WARM_CAP = 1_000_000  # out3's day cap: leases are taken and spent, the cap is not reached


def fleet_config(
    redis_url: str, local: bool, log_file: str = "", instance: str = "", rate_cap: int = 100_000
) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    out2: dict[str, Any] = {"bind_address": "127.0.0.3"}
    if rate_cap:
        out2["rate_caps"] = {"google": rate_cap}
    return {
        "redis": {"url": redis_url},
        "decision": {"local": local, "budget_ms": 1000, "bind_check_s": 0},
        "mx_lookup": {"enabled": False},
        "endpoints": {
            "out1": {"bind_address": "127.0.0.2"},
            "out2": out2,
            "out3": {"bind_address": "127.0.0.4", "warmup": {"start": today, "schedule": [WARM_CAP]}},
            "out4": {"bind_address": "127.0.0.5"},
        },
        "pools": {"main": {"endpoints": [{"endpoint": e, "weight": 1} for e in ENDPOINTS]}},
        "rules": [{"name": "all", "pool": "main"}],
        "feedback": {
            "log_file": log_file or "/dev/null",
            "instance": instance or "bench",
            "metrics_listen": "",
            "start_at": "beginning",
        },
        "policyd": {"metrics_listen": ""},
    }


# -- deciders (in worker processes) ----------------------------------------------------
def run_deciders(args: tuple[dict[str, Any], int, float, float, float, int]) -> tuple[int, list[float]]:
    raw, count, rate_each, start_at, stop_at, seed = args
    return asyncio.run(_deciders(raw, count, rate_each, start_at, stop_at, seed))


async def _deciders(
    raw: dict[str, Any], count: int, rate_each: float, start_at: float, stop_at: float, seed: int
) -> tuple[int, list[float]]:
    from smtp_balancer.config import validate_config
    from smtp_balancer.decision.facts import Facts
    from smtp_balancer.engine import Engine, Pending

    config = validate_config(raw)
    engines = [Engine(config, host=f"bench{seed}-{i}") for i in range(count)]
    for engine in engines:
        await engine.start()
    latencies: list[float] = []  # seconds, of decisions in the measured window
    done = 0
    rng = random.Random(seed)

    async def decider(engine: Engine, offset: float) -> None:
        nonlocal done
        period = 1 / rate_each
        due = time.monotonic() + offset
        n = 0
        while time.time() < stop_at:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due += period
            n += 1
            facts = Facts(sender="news@shop.test", recipients=(f"u{n}@{rng.choice(PROVIDERS)}",))
            began = time.perf_counter()
            result = engine.decide_now(facts)
            if isinstance(result, Pending):
                await engine.settle_pending(result)
            if time.time() >= start_at:
                latencies.append(time.perf_counter() - began)
                done += 1

    try:
        await asyncio.gather(*(decider(e, i / (count * rate_each)) for i, e in enumerate(engines)))
    finally:
        for engine in engines:
            await engine.aclose()
    return done, latencies


# -- the feedback daemons' input -------------------------------------------------------
class LogWriter(threading.Thread):
    """Appends Postfix delivery lines for our endpoints at ``rate`` a second to ``path``."""

    def __init__(self, path: Path, rate: float, stop_at: float) -> None:
        super().__init__(daemon=True)
        self.path, self.rate, self.stop_at = path, rate, stop_at
        self.written = 0

    def run(self) -> None:
        rng = random.Random(str(self.path))
        with self.path.open("a") as log:
            while time.time() < self.stop_at:
                batch = max(1, int(self.rate / 20))
                for _ in range(batch):
                    self.written += 1
                    ep = rng.choice(ENDPOINTS)
                    domain = rng.choice(PROVIDERS)
                    log.write(
                        f"Dec  5 10:00:00 mta postfix/{ep}/smtp[1]: {self.written:011X}: to=<u@{domain}>, "
                        f"relay=mx.{domain}[192.0.2.25]:25, delay=0.4, delays=0/0/0.2/0.2, dsn=2.0.0, "
                        "status=sent (250 2.0.0 OK)\n"
                    )
                log.flush()
                time.sleep(0.05)


# -- one row -----------------------------------------------------------------------------
def redis_cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def row(deciders: int, local: bool, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    redis = RedisServer(base / f"redis-{deciders}-{local}")
    redis.start()
    feeders: list[DaemonProcess] = []
    try:
        client = redis.client()
        start_at = time.time() + args.warmup + args.start_s
        stop_at = start_at + args.seconds
        writers = []
        for k in range(args.feedback_daemons):
            path = base / f"mail-{deciders}-{local}-{k}.log"
            path.touch()
            port = free_port()
            raw = fleet_config(redis.url, local, str(path), f"host{k}", args.rate_cap)
            raw["feedback"]["metrics_listen"] = f"127.0.0.1:{port}"
            config = base / f"feedback-{deciders}-{local}-{k}.yaml"
            config.write_text(yaml.safe_dump(raw))
            daemon = DaemonProcess("feedback", config, base / f"feedback-{k}.log", tcp_ready(port), "warning")
            daemon.start()
            feeders.append(daemon)
            writers.append(LogWriter(path, args.rate / args.feedback_daemons, stop_at))
        for writer in writers:
            writer.start()
        raw = fleet_config(redis.url, local, rate_cap=args.rate_cap)
        processes = min(args.processes, deciders)
        per = [deciders // processes + (i < deciders % processes) for i in range(processes)]
        rate_each = args.rate / deciders
        jobs = [(raw, n, rate_each, start_at, stop_at, i) for i, n in enumerate(per)]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pending = pool.map_async(run_deciders, jobs)
            time.sleep(max(0.0, start_at - time.time()))
            before, stats_before = client.info(), client.info("commandstats")
            time.sleep(max(0.0, stop_at - time.time()))
            after, stats_after = client.info(), client.info("commandstats")
            results = pending.get(timeout=args.seconds + args.warmup + 300)
        done = sum(n for n, _ in results)
        latencies = sorted(x for _, lats in results for x in lats)
        cpu = redis_cpu(after) - redis_cpu(before)
        share = cpu / args.seconds
        counted = int(client.hget(f"{{sb}}:count:out3:day:{datetime.now(UTC):%Y%m%d}", "total") or 0)
        window = {
            name.removeprefix("cmdstat_"): (
                v["usec"] - stats_before.get(name, {}).get("usec", 0),
                v["calls"] - stats_before.get(name, {}).get("calls", 0),
            )
            for name, v in stats_after.items()
        }
        top = sorted(window.items(), key=lambda item: -item[1][0])[:4]
        return {
            "deciders": deciders,
            "mode": "local" if local else "script",
            "decisions_s": done / args.seconds,
            "cpu_us_per_decision": cpu * 1e6 / max(done, 1),
            "redis_core_share": share,
            "decisions_s_at_one_core": (done / args.seconds) / share if share else float("inf"),
            "p50_ms": statistics.median(latencies) * 1e3 if latencies else 0.0,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else 0.0,
            "memory_mb": int(after["used_memory"]) / 1e6,
            "fed_lines": sum(w.written for w in writers),
            "warm_counted": counted,
            # per command: time inside it per decision (commandstats: wall time, scripts'
            # inner commands counted in the script too) and calls per decision
            "top": ", ".join(f"{n} {u / max(done, 1):.1f}µs x{c / max(done, 1):.2f}" for n, (u, c) in top),
        }
    finally:
        for daemon in feeders:
            daemon.stop()
        redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="N deciders on one Redis: its CPU and memory per decision")
    parser.add_argument("--deciders", default="10,100,200")
    parser.add_argument("--modes", default="local,script")
    parser.add_argument("--rate", type=float, default=1000.0, help="fleet decisions a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--start-s", type=float, default=4.0, help="time for the processes to start")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rate-cap", type=int, default=100_000, help="out2's google cap a minute; 0: none")
    parser.add_argument("--feedback-daemons", type=int, default=2, help="0: the deciders' cost alone")
    args = parser.parse_args()
    print(f"fleet rate {args.rate:.0f} decisions/s, {args.seconds:.0f} s measured per row")
    header = (
        f"{'deciders':>8} {'mode':>6} {'dec/s':>7} {'Redis µs/dec':>12} {'Redis core':>10} "
        f"{'dec/s at 1 core':>15} {'p50 ms':>7} {'p99 ms':>7} {'mem MB':>7} {'fed lines':>9}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="sb-fleet-bench-") as tmp:
        for deciders in (int(n) for n in args.deciders.split(",")):
            for mode in args.modes.split(","):
                r = row(deciders, mode == "local", args, Path(tmp))
                print(
                    f"{r['deciders']:>8} {r['mode']:>6} {r['decisions_s']:>7.0f} "
                    f"{r['cpu_us_per_decision']:>12.1f} {r['redis_core_share']:>10.2f} "
                    f"{r['decisions_s_at_one_core']:>15.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                    f"{r['memory_mb']:>7.1f} {r['fed_lines']:>9}   time in: {r['top']}",
                    flush=True,
                )
                assert r["warm_counted"] <= WARM_CAP
    return 0


if __name__ == "__main__":
    sys.exit(main())
