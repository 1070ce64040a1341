"""Feedback daemon throughput on a synthetic Postfix (or Exim) log, against a private local redis-server.

Writes N synthetic lines (60% delivery results, 35% other Postfix lines, 5%
garbage) to a file, then times, in the same run:
  - baseline: the log follower alone reading every line (file I/O only);
  - feedback: the follower, the parser and rule matching, and the Redis writes
    (one MULTI/EXEC per batch with the saved position), exactly as the daemon's
    loop does (FeedbackDaemon.step).
It prints lines/s for both, the ratio, the target (20,000 lines/s), and the
process RSS after the first fifth and at the end (memory must stay flat).

`--format exim` does the same with Exim's main log (feedback.log_format: exim).
`--experiment` adds a running A/B experiment: every other queue id has an arm
record, so each batch also looks its queue ids up, and the ids without a record
are asked again once a second for 5 s; the script checks the arms' counts.

Bounded: N lines (default 100,000). Run: make bench-feedback
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis as redis_py

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration.configs import topology
from integration.redis_server import RedisServer
from integration.workloads import stored_outcomes, synthetic_exim_log, synthetic_log
from smtp_balancer.config import validate_config
from smtp_balancer.feedback.daemon import FeedbackDaemon
from smtp_balancer.feedback.follower import LogFollower

TARGET = 20_000
# a delivery line through one of our endpoints, and its queue id
OUR_DELIVERY = re.compile(r".* postfix/out\d/smtp\[\d+\]: ([0-9A-F]+): to=")
EXPERIMENT = {
    "name": "bench",
    "rule": "all",
    "arms": [{"name": "a", "pool": "main", "split": 50}, {"name": "b", "pool": "main", "split": 50}],
}


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


COMPLAINT_RULE = {
    "name": "complaints",
    "measure": "complained",
    "above_percent": 0.3,
    "recover_below_percent": 0.1,
    "min_attempts": 1000,
    "window": "1d",
    "action": "quarantine",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--format", choices=["postfix", "exim"], default="postfix")
    parser.add_argument(
        "--tenants", action="store_true", help="with tenants: the sender join from arrival lines"
    )
    parser.add_argument(
        "--complaint-rule",
        action="store_true",
        help="with a complaint rate rule over a day (runs at most once a minute in the daemon)",
    )
    parser.add_argument(
        "--experiment",
        action="store_true",
        help="with a running experiment: every other queue id has an arm record (Postfix log)",
    )
    args = parser.parse_args()
    if args.experiment and args.format != "postfix":
        parser.error("--experiment reads the Postfix log")
    logging.getLogger("smtp_balancer").setLevel(logging.ERROR)  # the garbage lines are on purpose

    with tempfile.TemporaryDirectory(prefix="sb-bench-fb-") as tmp:
        log = Path(tmp) / "mail.log"
        make_log = synthetic_exim_log if args.format == "exim" else synthetic_log
        lines, deliveries = make_log(args.lines, seed=3)
        log.write_text("\n".join(lines) + "\n")
        # the deliveries through endpoints of the messages with an arm record
        in_arms = sum(1 for m in map(OUR_DELIVERY.match, lines) if m and int(m[1], 16) % 2 == 0)
        del lines

        start = time.perf_counter()
        follower = LogFollower(log, start_at="beginning")
        n = 0
        while batch := follower.read_lines(args.batch):
            n += len(batch)
        follower.close()
        base_s = time.perf_counter() - start

        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            raw = {
                "redis": {"url": server.url},
                **topology(),
                "feedback": {
                    "log_file": str(log),
                    "start_at": "beginning",
                    "instance": "bench",
                    "batch_lines": args.batch,
                    "log_format": args.format,
                    "metrics_listen": "",
                    "rate_rules": [COMPLAINT_RULE] if args.complaint_rule else [],
                },
                "tenants": ["shop.test"] if args.tenants else [],
                "experiments": [EXPERIMENT] if args.experiment else [],
            }
            if args.experiment:
                with redis_py.Redis.from_url(server.url) as client:
                    pipe = client.pipeline(transaction=False)
                    for i in range(0, args.lines, 2):
                        pipe.set(f"{{sb}}:arm:{i:011X}", "bench a" if i % 4 == 0 else "bench b", ex=3600)
                    pipe.execute()
            daemon = FeedbackDaemon(validate_config(raw), threading.Event())
            daemon.follower = daemon.open_log()
            done = 0
            early_rss = 0.0
            start = time.perf_counter()
            while (got := daemon.step()) > 0:
                done += got
                if not early_rss and done >= args.lines // 5:
                    early_rss = rss_mib()
            fb_s = time.perf_counter() - start
            end_rss = rss_mib()
            daemon.follower.close()
            stored = stored_outcomes(daemon.r)
            by_tenant = stored_outcomes(daemon.r, "{sb}:tenant:*") if args.tenants else None
            by_arm = stored_outcomes(daemon.r, "{sb}:expstats:*") if args.experiment else None
        finally:
            server.stop()

    expected = sum(v for ep, v in deliveries.items() if ep)
    with_tenants = " with tenants" if args.tenants else ""
    with_tenants += " with an experiment" if args.experiment else ""
    print(
        f"{args.format} log{with_tenants}, lines: {args.lines:,}  batch: {args.batch}"
        f"  deliveries through endpoints: {expected:,}"
    )
    print(f"baseline (follower only):    {n / base_s:>10,.0f} lines/s")
    print(f"feedback (parse+rules+Redis): {done / fb_s:>9,.0f} lines/s  = {base_s / fb_s:.3f} of baseline")
    print(
        f"target: {TARGET:,} lines/s -> {'MET' if done / fb_s >= TARGET else 'NOT MET'} "
        f"({done / fb_s / TARGET:.2f}x)"
    )
    print(
        f"RSS after {args.lines // 5:,} lines: {early_rss:.1f} MiB; after {done:,}: {end_rss:.1f} MiB "
        f"(+{end_rss - early_rss:.1f} MiB)"
    )
    if stored != expected:
        print(f"ERROR: Redis counted {stored} deliveries, expected {expected}")
        return 1
    if by_tenant is not None and by_tenant != expected:
        print(f"ERROR: Redis counted {by_tenant} deliveries by tenant, expected {expected}")
        return 1
    if by_arm is not None and by_arm != in_arms:
        print(f"ERROR: Redis counted {by_arm} deliveries by arm, expected {in_arms}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
