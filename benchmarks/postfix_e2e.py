"""End to end: smtp-source -> private Postfix -> smtp-sink, plain Postfix against our daemons.

Variants, all measured in the same run, in rounds (each in its own shuffled order), so
drift on the shared machine hits each of them:
  plain        Postfix with our rendered master.cf transports, nothing else;
  policyd      plus the policy daemon (RCPT + END-OF-MESSAGE requests, FILTER);
  policyd-shadow  the policy daemon in shadow mode (shadow.config: the same endpoints
               at other weights), against policyd for what shadow mode costs;
  milter-unix  plus the milter on a unix socket (header -> milter_header_checks -> FILTER);
  milter-inet  the same milter on inet:127.0.0.1 (libmilter's small writes meet
               Nagle + delayed ACK there);
  policyd-dunno  baseline: the same main.cf lines, answered by the DUNNO server
               of the protocol benchmark (the price of any policy service);
  policyd-filter  baseline: the same, answered by that DUNNO server routing without
               deciding (FILTER out1:, out2:, out2:, out3: in turn at END-OF-MESSAGE, the
               1:2:1 policyd's configuration gives): the price of any routing service,
               Postfix's share included (a log line per FILTER; delivery through three
               transports, so more smtp processes and connections);
  policyd-dunno-protocol  the same, answered by a DUNNO server written as an
               asyncio Protocol, as policyd is (benchmarks/dunno_protocol.py): the
               floor of policyd's own design, for telling its I/O from its work;
  milter-noop  baseline: the same milter lines, answered by a pymilter milter
               that does nothing (the price of any pymilter milter).
Time runs from smtp-source's first connection until the Postfix log shows every
message delivered (status=sent).

Each run's Postfix (queue, log) lives under --spool-parent, /dev/shm by default. On
this project's VM disk, cleanup(8) took a quarter of the host's CPU, its top kernel
symbols in ext4's inode allocation (recently_deleted, find_inode_bit) after many runs'
queue files were created and deleted: the disk's history set part of the pace. The
queue's I/O is the same for every variant and is not what is compared; on tmpfs Postfix
is faster, so a daemon's cost is a larger share of each message, not a smaller one.
Host CPU/msg: every process's CPU (/proc/stat, all but idle and iowait) from
smtp-source's start to the last delivery, divided by the messages: what the machine
spent per message with that variant, the figure a CPU-bound host's throughput follows.

Two ways to run the rounds:
  default      each run starts its own Redis, daemon and Postfix and sends --messages:
               a daemon's start, first connections and first requests included;
  --keep-running  each variant started once, one warm-up burst, then --rounds bursts of
               --messages through each, in rounds: the steady state production runs
               in, and short bursts close together, so many rounds fit and drift between
               them is small. The "paired" line gives each round's rate over the
               baseline's in the same round: its median and a 95% interval for it.
With --warm N (a diagnostic), each timed burst follows N untimed messages through the
same variant, instead of coming after the variant sat quiet while the others ran. It
was tried on a lead that pauses slow routing through three transports; the lead did
not hold up (BENCHMARKS.md, session 36).

Run: make bench-e2e (plain, the DUNNO and routing baselines, policyd, shadow mode), make bench-milter
(plain, no-op baseline, our milter on unix and inet)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import random
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
    process_stat,
    tcp_ready,
    unix_ready,
)
from integration.postfix import PostfixInstance, make_shared_dir  # noqa: E402
from integration.redis_server import RedisServer  # noqa: E402
from integration.sink import free_port  # noqa: E402

VARIANTS = (
    "plain",
    "policyd",
    "policyd-shadow",
    "milter-unix",
    "milter-inet",
    "policyd-dunno",
    "policyd-filter",
    "policyd-dunno-protocol",
    "milter-noop",
)


def milter_ms_per_message(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    total = float(re.search(r"^smtp_balancer_milter_eom_duration_seconds_sum (\S+)", text, re.M).group(1))
    count = float(re.search(r"^smtp_balancer_milter_eom_duration_seconds_count (\S+)", text, re.M).group(1))
    return 1000 * total / count if count else float("nan")


class Result:
    def __init__(
        self, elapsed: float, cpu: dict[str, float], host_cpu: float, milter_ms: float | None
    ) -> None:
        self.elapsed, self.cpu, self.host_cpu, self.milter_ms = elapsed, cpu, host_cpu, milter_ms


def host_busy_seconds() -> float:
    """CPU seconds the whole host has spent, all CPUs, idle and iowait left out."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class DeliveredCount:
    """Counts status=sent in a growing log, reading only what was added since the last
    look: re-reading a 5 MB log every 50 ms is CPU the host would charge to the run."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.count, self.partial = path, 0, 0, b""

    def update(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as log:
                log.seek(self.offset)
                added = log.read()
            self.offset += len(added)
            # a line cut at the read's end is counted when its rest arrives
            lines = (self.partial + added).split(b"\n")
            self.partial = lines.pop()
            self.count += sum(b"status=sent" in line for line in lines)
        return self.count


STALL_S = 30.0  # the log still for this long: say what the instance's processes wait on
GIVE_UP_S = 600.0


def postlog_queue_note() -> str:
    """A warning when unix datagram queues are short: postlogd's socket then fills under
    this load, and a lab Postfix froze with its master waiting to log into it while
    postlogd waited to report its status to the master (BENCHMARKS.md, session 36)."""
    try:
        qlen = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    except (OSError, ValueError):
        return ""
    if qlen >= 512:
        return ""
    return (
        f"note: net.unix.max_dgram_qlen is {qlen} (the kernel's default; systemd sets 512): a lab "
        "Postfix froze under this load with it (BENCHMARKS.md, session 36), none yet with "
        "512: `sysctl -w net.unix.max_dgram_qlen=512` before the run"
    )


class StallWatch:
    """A frozen lab Postfix: its log stops growing while a burst is on. Once it has been
    still for STALL_S, each process of the instance is printed by name, state and
    kernel wait channel, with the kernel stacks of its master and postlogd (a lab
    Postfix froze with its master and postlogd each waiting for the other:
    BENCHMARKS.md, session 36). After GIVE_UP_S the burst fails."""

    def __init__(self, variant: str, postfix: PostfixInstance) -> None:
        self.variant, self.postfix = variant, postfix
        self.size, self.moved, self.reported = -1, time.monotonic(), False

    def check(self) -> None:
        size, now = self.postfix.log_file.stat().st_size, time.monotonic()
        if size != self.size:
            self.size, self.moved = size, now
        elif now - self.moved > GIVE_UP_S:
            raise TimeoutError(f"{self.variant}: its Postfix log has not grown for {GIVE_UP_S:.0f} s")
        elif now - self.moved > STALL_S and not self.reported:
            self.reported = True
            print(f"{self.variant}: the Postfix log still for {STALL_S:.0f} s\n{self.report()}", flush=True)

    def report(self) -> str:
        master = self.postfix._master_pid
        if master is None:
            return "  no master"
        states: collections.Counter[str] = collections.Counter()
        stacks = []
        for pid in [master, *self.postfix.children()]:
            if (stat := process_stat(pid)) is None:
                continue  # gone meanwhile
            comm, state = stat
            try:
                states[f"{comm} {state} {Path(f'/proc/{pid}/wchan').read_text() or '-'}"] += 1
                if comm in ("master", "postlogd"):
                    frames = Path(f"/proc/{pid}/stack").read_text().split("\n")[:6]
                    stacks.append(
                        f"  {comm}[{pid}] {state}: " + " / ".join(f.split()[-1] for f in frames if f)
                    )
            except OSError:
                continue  # gone meanwhile
        lines = [f"  {n} x {key}" for key, n in states.most_common()] + stacks
        return "\n".join(lines) + "\n  log tail:\n" + self.postfix.log_text()[-600:]


class Rig:
    """One variant's Redis, sink, daemon and Postfix, started; ``burst`` sends through
    it and waits for the deliveries, as often as asked."""

    def __init__(self, base: Path, variant: str, args: argparse.Namespace) -> None:
        self.base, self.variant, self.args = base, variant, args
        self.daemon: DaemonProcess | None = None
        self.postfix: PostfixInstance | None = None
        self.redis = RedisServer(base / "redis")
        self.redis.start()
        self.sink: subprocess.Popen[bytes] | None = None
        try:
            self.sink = start_smtp_sink(sink_port := free_port())
            self._start(sink_port)
        except BaseException:
            self.stop()
            raise
        assert self.postfix is not None
        self.delivered = DeliveredCount(self.postfix.log_file)
        self.sent = 0

    def _start(self, sink_port: int) -> None:
        base, variant, args = self.base, self.variant, self.args
        policy_port, milter_port = free_port(), free_port()
        self.milter_metrics = free_port()
        config = base_config(self.redis.url, policy_port, 0)
        config["policyd"].update(
            {
                "metrics_listen": "",
                "enabled": variant.startswith("policyd"),
                "collect_recipients": not args.no_rcpt_join,
            }
        )
        milter_socket = base / "milter" / "milter.sock"
        config["milter"] = {
            "enabled": variant.startswith("milter"),
            "listen": f"inet:127.0.0.1:{milter_port}"
            if variant == "milter-inet"
            else f"unix:{milter_socket}",
            "postfix_maps_dir": str(base / "maps"),
            "metrics_listen": f"127.0.0.1:{self.milter_metrics}",
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
            self.daemon = PolicydProcess(config_path, policy_port, base / "daemon.log", args.log_level)
        elif variant in ("policyd-dunno", "policyd-filter", "policyd-dunno-protocol"):
            server = "dunno_protocol.py" if variant == "policyd-dunno-protocol" else "dunno_server.py"
            routes = ["out1", "out2", "out2", "out3"] if variant == "policyd-filter" else []
            self.daemon = BaselineProcess(
                HERE / server, [str(policy_port), *routes], base / "daemon.log", tcp_ready(policy_port)
            )
        elif variant.startswith("milter"):
            write_maps(config_path, base / "maps")
            ready = tcp_ready(milter_port) if variant == "milter-inet" else unix_ready(milter_socket)
            if variant == "milter-noop":
                milter_socket.parent.mkdir(parents=True, exist_ok=True)
                self.daemon = BaselineProcess(
                    HERE / "noop_milter.py", [f"unix:{milter_socket}"], base / "daemon.log", ready
                )
            else:
                self.daemon = DaemonProcess("milter", config_path, base / "daemon.log", ready, args.log_level)
        if self.daemon is not None:
            self.daemon.start()
        self.postfix = rendered_postfix(base, config_path, free_port(), sink_port)

    def burst(self, messages: int) -> Result:
        """``messages`` through smtp-source; timed until the log shows them delivered."""
        assert self.postfix is not None
        daemon = self.daemon.proc.pid if self.daemon and self.daemon.proc else None
        pids = {"daemon": daemon, "redis": self.redis.proc.pid}
        before = {k: cpu_seconds(p) for k, p in pids.items() if p}
        host_before = host_busy_seconds()
        started = time.perf_counter()
        argv = ["smtp-source", "-s", str(self.args.sessions), "-m", str(messages)]
        argv += ["-f", "news@shop.test", "-t", "user@example.test", f"127.0.0.1:{self.postfix.smtpd_port}"]
        source = subprocess.Popen(argv)
        stall = StallWatch(self.variant, self.postfix)
        try:
            while True:  # wait() returns the moment smtp-source exits: the timing is unchanged
                with contextlib.suppress(subprocess.TimeoutExpired):
                    source.wait(timeout=0.5)
                    break
                stall.check()
        finally:
            if source.poll() is None:  # a stall that never ends, or ^C
                source.kill()
                source.wait()
        if source.returncode:
            raise subprocess.CalledProcessError(source.returncode, argv)
        self.sent += messages
        while self.delivered.update() < self.sent:
            stall.check()
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        host_cpu = host_busy_seconds() - host_before
        cpu = {k: cpu_seconds(p) - before[k] for k, p in pids.items() if p}
        ours_milter = self.variant in ("milter-unix", "milter-inet")
        milter_ms = milter_ms_per_message(self.milter_metrics) if ours_milter else None
        return Result(elapsed, cpu, host_cpu, milter_ms)

    def measured(self) -> Result:
        """A timed burst of --messages, after --warm untimed ones if asked."""
        if self.args.warm:
            self.burst(self.args.warm)
        return self.burst(self.args.messages)

    def check(self) -> None:
        """The variant did what it is measured for."""
        assert self.postfix is not None
        ours = self.variant in ("policyd", "policyd-filter", "milter-unix", "milter-inet")
        if ours and not self.args.no_rules and "postfix/out" not in self.postfix.log_text():
            raise RuntimeError(f"{self.variant}: mail did not leave by our transports")
        shadow = self.variant == "policyd-shadow"
        if shadow and "shadow_endpoint=" not in (self.base / "daemon.log").read_text():
            raise RuntimeError(f"{self.variant}: no decision line carries a shadow decision")

    def stop(self) -> None:
        if self.sink is None:
            self.redis.stop()
        else:
            stop_all(self.postfix, self.daemon, self.sink, self.redis)


def run_once(base: Path, variant: str, args: argparse.Namespace) -> Result:
    rig = Rig(base, variant, args)
    try:
        result = rig.measured()
        rig.check()
        return result
    finally:
        rig.stop()


def median_interval(ordered: list[float]) -> tuple[float, float]:
    """A distribution-free 95% confidence interval for the median of sorted ``ordered``:
    the k-th smallest and k-th largest, k the largest with P(Binomial(n, 1/2) < k) at
    most 2.5% (the whole range when n is under 6, too few for 95%)."""
    n, k, below = len(ordered), 0, 0.0
    while below + math.comb(n, k) / 2**n <= 0.025:
        below += math.comb(n, k) / 2**n
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


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
    parser.add_argument("--seed", type=int, default=1, help="of the rounds' orders")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of quiet before each run")
    parser.add_argument("--log-level", default="info", help="daemon log level")
    parser.add_argument(
        "--spool-parent",
        default="/dev/shm",
        help="where each run's Postfix queue and log go (default /dev/shm, a tmpfs: see above)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="start each variant once and alternate bursts of --messages through them "
        "(short rounds, many of them: see BENCHMARKS.md)",
    )
    parser.add_argument(
        "--warm",
        type=int,
        default=0,
        metavar="N",
        help="diagnostic: before each timed burst, N messages through the same variant, not "
        "timed, so that the timed burst meets a busy MTA, not one that sat quiet while the "
        "other variants ran (BENCHMARKS.md, session 36)",
    )
    parser.add_argument(
        "--no-rules", action="store_true", help="diagnostic: daemons consulted, nothing routed"
    )
    parser.add_argument(
        "--no-rcpt-join",
        action="store_true",
        help="policyd.collect_recipients off: no RCPT-stage request, one policy request per message",
    )
    args = parser.parse_args()
    if not os.access(args.spool_parent, os.W_OK):
        parser.error(f"--spool-parent {args.spool_parent}: not a writable directory")
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    results: dict[str, list[Result]] = {v: [] for v in variants}
    mode = (
        f"each variant started once, a warm-up burst, then bursts of {args.messages}"
        + (f", each after an untimed {args.warm}" if args.warm else "")
        if args.keep_running
        else f"{args.messages} messages a run, each run on a fresh setup"
    )
    print(
        f"end-to-end benchmark: {args.sessions} smtp-source sessions, {args.rounds} rounds of "
        f"{', '.join(variants)}; {mode}; Postfix under {args.spool_parent}"
    )
    if note := postlog_queue_note():
        print(note, flush=True)
    rigs: dict[str, tuple[Path, Rig]] = {}
    try:
        if args.keep_running:
            for variant in variants:
                base = make_shared_dir("sb-e2e-", args.spool_parent)
                try:
                    rigs[variant] = (base, Rig(base, variant, args))
                except BaseException:
                    shutil.rmtree(base, ignore_errors=True)
                    raise
                rigs[variant][1].burst(args.messages)  # processes spawned, connections made
        shuffler = random.Random(args.seed)
        for round_no in range(1, args.rounds + 1):
            # each round in its own order: the first run of a round tends to be the fastest
            # (nothing left over from a previous run), and a run after a given variant
            # may be slower or faster; neither may always favour the same variant
            order = list(variants)
            shuffler.shuffle(order)
            for variant in order:
                settle(args.settle)
                if args.keep_running:
                    result = rigs[variant][1].measured()
                else:
                    base = make_shared_dir("sb-e2e-", args.spool_parent)
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
                    f"{args.messages / result.elapsed:6.0f} msg/s  "
                    f"host CPU/msg {result.host_cpu / args.messages * 1e3:.3f} ms{extra}",
                    flush=True,
                )
        for _, rig in rigs.values():
            rig.check()
    finally:
        for base, rig in rigs.values():
            rig.stop()
            shutil.rmtree(base, ignore_errors=True)
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
    host_ms = {
        v: statistics.median(r.host_cpu / args.messages * 1e3 for r in rs) for v, rs in results.items()
    }
    baseline = "policyd-dunno" if "policyd-dunno" in variants else variants[0]
    pairs = [(v, baseline) for v in variants if v != baseline]
    if "policyd" in variants and "policyd-filter" in variants:
        pairs.append(("policyd", "policyd-filter"))  # the daemon's own share of routing
    for variant, against in pairs:
        # paired: each round's rate over the other's in the same round, which ran
        # seconds apart, so drift on the shared machine mostly cancels
        paired = sorted(
            (r.elapsed and b.elapsed / r.elapsed)
            for r, b in zip(results[variant], results[against], strict=True)
        )
        low, high = median_interval(paired)
        spread = "95% interval" if len(paired) >= 6 else "range (too few rounds for a 95% interval)"
        print(
            f"paired {variant:<12} rate / {against}'s in the same round: median "
            f"{statistics.median(paired):.3f}, {spread} {low:.3f}-{high:.3f} ({len(paired)} rounds)"
        )
    for variant in variants:
        print(
            f"median {variant:<12} {rate[variant]:6.0f} msg/s  ratio to {baseline} "
            f"{rate[variant] / rate[baseline]:.2f}  daemon CPU/msg {cpu_ms[variant]:.3f} ms"
            + (f" ({cpu_ms[variant] / cpu_ms[baseline]:.2f}x {baseline})" if cpu_ms[baseline] else "")
            + f"  host CPU/msg {host_ms[variant]:.3f} ms ({host_ms[variant] / host_ms[baseline]:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
