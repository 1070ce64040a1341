"""Eight MTA hosts on one Redis behind Sentinel (issue #36): 6 Postfix, 2 Exim, 20,000 messages.

Each host has its own policy daemon (two of them supervisors of two workers) and
its own feedback daemon on its own MTA log; all of them find the master through
three sentinels. While the mail flows:
- out3 warms up under a day cap of 400, 80 of them for Google: both fill exactly,
  fleet-wide;
- out1 has a rate cap of 600 a minute over every provider: no 58 s of decisions,
  on any host, holds more, and the cap's window reaches it;
- Gmail throttles out2 (421 4.7.28) at every host: the first host's feedback daemon
  suspends (out2, google), and no Gmail message submitted on any host 1 s after
  that leaves through out2;
- the Redis master is killed while every host is sending: decisions are back on
  every host within 10 s of the failover (each host sends more after it, to show
  it). The failover itself is Sentinel's: a failed election is retried after
  twice failover-timeout, as seen once under CI load (21.5 s to promote the
  replica, with a failover-timeout of 10 s then).
At the end every message has arrived exactly once, each endpoint's counter equals
its deliveries and the feedback daemons counted each delivery once.
The figures are printed (and recorded in BENCHMARKS.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from integration.configs import ENDPOINT_IP
from integration.conftest import base_config, rendered_postfix, torn_down, write_config
from integration.daemons import CLI, DaemonProcess, PolicydProcess, decision_lines, tcp_ready
from integration.exim import EXIM_SINK_HOST, EximInstance, exim_binary, readme_render_command
from integration.postfix import make_shared_dir
from integration.sentinel import SERVICE, SentinelSet
from integration.sink import Sink, free_port
from integration.submit import send_many
from integration.waits import MAIL_S, WaitTimeout, wait_for_progress, wait_until
from integration.workloads import assert_counted_exactly
from smtp_balancer.clock import SYSTEM, utc_now
from smtp_balancer.decision.rates import window_count

TOTAL = 20_000
# (name, MTA, policy daemon workers)
HOSTS = [
    ("pf1", "postfix", 1),
    ("pf2", "postfix", 2),
    ("pf3", "postfix", 1),
    ("pf4", "postfix", 2),
    ("pf5", "postfix", 1),
    ("pf6", "postfix", 1),
    ("ex1", "exim", 1),
    ("ex2", "exim", 1),
]
PER_HOST = TOTAL // len(HOSTS)
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com"]
WARM_TOTAL, WARM_GOOGLE = 400, 80  # out3's day cap, and Google's part of it
RATE = 600  # out1, every provider together, per minute
THROTTLE_AT = TOTAL // 5  # deliveries at the sinks
# each host sends its messages in three parts: the throttle comes in the first; the
# master is killed once every host has sent KILL_INTO of the second; the third begins
# after the failover, so every host has mail to decide once Redis is back
PHASES = [
    (0, PER_HOST * 6 // 10),
    (PER_HOST * 6 // 10, PER_HOST * 85 // 100),
    (PER_HOST * 85 // 100, PER_HOST),
]
KILL_INTO = 50
AFTER_THROTTLE = 2_000  # deliveries with Gmail refusing out2 before it stops
PROPAGATION_S = 1.0
FOLLOW_S = 10.0
GMAIL_421 = (
    "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating\r\n"
    "421 4.7.28 from your IP address. To protect our users from spam, mail sent from your IP address "
    "has been temporarily rate limited. - gsmtp"
)
SUSPENSION = "{sb}:suspend:out2:google"
OUT1, OUT2, OUT3 = (ENDPOINT_IP[e] for e in ("out1", "out2", "out3"))


def recipient(i: int) -> list[str]:
    return [f"u{i}@{DOMAINS[i % len(DOMAINS)]}"]


@dataclass
class Host:
    name: str
    port: int  # where its MTA takes mail
    policyd: PolicydProcess
    feedback: DaemonProcess
    log_file: Path  # the MTA's log, which its feedback daemon reads
    queue_empty: Callable[[], bool]
    flush: Callable[[], None]


def host_config(
    base: Path, name: str, workers: int, sentinels: SentinelSet, feedback: dict[str, Any]
) -> Path:
    """One host's YAML: the fleet's endpoints, pools and caps, its own ports and log."""
    today = utc_now().date().isoformat()
    warm = {"start": today, "schedule": [WARM_TOTAL], "providers": {"google": [WARM_GOOGLE]}}
    layer = {
        "redis": {"sentinel": {"hosts": sentinels.hosts, "service_name": SERVICE}},
        "endpoints": {"out1": {"rate_caps": {"all": RATE}}, "out3": {"warmup": warm}},
        "policyd": {"workers": workers},
        "feedback": {
            "start_at": "beginning",
            "instance": name,
            "metrics_listen": f"127.0.0.1:{free_port()}",
            "poll_interval_ms": 100,
            **feedback,
        },
    }
    return write_config(base, base_config(sentinels.master.url, free_port(), free_port()), layer)


def start_daemons(
    config: Path, base: Path, started: list[Callable[[], None]]
) -> tuple[PolicydProcess, DaemonProcess]:
    """The host's policy daemon, started, and its feedback daemon, not yet (its log
    comes with the MTA)."""
    raw = yaml.safe_load(config.read_text())
    policy_port = int(raw["policyd"]["listen"][0].rpartition(":")[2])
    policyd = PolicydProcess(config, policy_port, base / "policyd.log")
    policyd.start()
    started.append(policyd.stop)
    feedback_port = int(raw["feedback"]["metrics_listen"].rpartition(":")[2])
    feedback = DaemonProcess("feedback", config, base / "feedback.log", tcp_ready(feedback_port))
    return policyd, feedback


def postfix_host(
    name: str,
    workers: int,
    sentinels: SentinelSet,
    sink: Sink,
    started: list[Callable[[], None]],
    bases: list[Path],
) -> Host:
    base = make_shared_dir(f"sb-{name}-")
    bases.append(base)
    config = host_config(base, name, workers, sentinels, {"log_file": str(base / "postfix" / "postfix.log")})
    policyd, feedback = start_daemons(config, base, started)
    postfix = rendered_postfix(base, config, sink.port, started, domains=DOMAINS)
    feedback.start()
    started.append(feedback.stop)
    return Host(
        name, postfix.smtpd_port, policyd, feedback, postfix.log_file, postfix.queue_is_empty, postfix.flush
    )


def exim_host(
    name: str, sentinels: SentinelSet, sink: Sink, started: list[Callable[[], None]], bases: list[Path]
) -> Host:
    base = make_shared_dir(f"sb-{name}-")
    bases.append(base)
    exim_dir = base / "exim"
    config = host_config(
        base, name, 1, sentinels, {"log_file": str(exim_dir / "log" / "mainlog"), "log_format": "exim"}
    )
    rendered = base / "exim-rendered"
    command = readme_render_command(rendered)
    subprocess.run([CLI, "-c", str(config), *command[1:]], check=True, capture_output=True)
    policyd, feedback = start_daemons(config, base, started)
    exim = EximInstance(exim_dir, free_port(), rendered, EXIM_SINK_HOST, sink.port)
    started.append(exim.stop)
    exim.start()
    feedback.start()
    started.append(feedback.stop)

    def queue_run() -> None:  # exim -qf: every message now, retry times or not
        subprocess.run(
            [str(exim_binary()), "-C", str(exim.config_file), "-qf"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    return Host(
        name,
        exim.smtp_port,
        policyd,
        feedback,
        exim.logs / "mainlog",
        lambda: exim.queue_size() == 0,
        queue_run,
    )


class Watcher:
    """Polls the current master (as the sentinels name it) every 20 ms: when the
    suspension first shows, and the most out1's rate window ever held."""

    def __init__(self, sentinels: SentinelSet) -> None:
        self.sentinels = sentinels
        self.suspended_at: float | None = None
        self.window_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        client: redis.Redis | None = None
        address = None
        while not self._stop.wait(0.02):
            try:
                now_address = self.sentinels.master_address()
                if now_address != address or client is None:
                    address = now_address
                    assert address is not None
                    client = redis.Redis(address[0], address[1], socket_timeout=1, decode_responses=True)
                if self.suspended_at is None and client.exists(SUSPENSION):
                    self.suspended_at = time.monotonic()
                count = window_count(client.hgetall("{sb}:ratesec:out1:all"), SYSTEM.wall())
                self.window_max = max(self.window_max, count)
            except (redis.RedisError, OSError, AssertionError):
                client = None  # the master is failing over: ask the sentinels again

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def wall_ts(line: dict[str, str]) -> float:
    return datetime.fromisoformat(line["ts"]).timestamp()


def most_in_any(times: list[float], span_s: float) -> int:
    """The most of ``times`` (sorted) in any ``span_s`` seconds."""
    return max((i + 1 - bisect_left(times, t - span_s) for i, t in enumerate(times)), default=0)


@pytest.mark.timeout(900)  # about 2.5 minutes alone; longer beside the rest of the suite
def test_eight_hosts_on_one_redis_20000_messages_caps_throttle_and_failover(tmp_path):
    if shutil.which("postfix") is None or shutil.which("redis-server") is None:
        pytest.fail("postfix and redis-server must be installed (make test installs them)")
    with torn_down() as (started, bases):
        sentinels = SentinelSet(tmp_path / "sentinel")
        started.append(sentinels.stop)
        sentinels.start()
        postfix_sink, exim_sink = Sink(), Sink(EXIM_SINK_HOST)
        for sink in (postfix_sink, exim_sink):
            sink.start()
            started.append(sink.stop)
        hosts = [
            postfix_host(name, workers, sentinels, postfix_sink, started, bases)
            if kind == "postfix"
            else exim_host(name, sentinels, exim_sink, started, bases)
            for name, kind, workers in HOSTS
        ]

        def delivered() -> int:
            return len(postfix_sink.messages) + len(exim_sink.messages)

        submitted: dict[int, float] = {}
        errors: list[str] = []

        def senders(phase: tuple[int, int]) -> list[threading.Thread]:
            """Each host's messages ``phase`` (from, to; of its PER_HOST), sending."""
            first, last = phase
            threads = [
                threading.Thread(
                    target=lambda h=h, k=k: errors.extend(
                        send_many(
                            h.port,
                            last - first,
                            threads=3,  # Exim closes a connection after 1,000 messages
                            start=k * PER_HOST + first,
                            recipients=recipient,
                            tag=lambda i, n=h.name: n,
                            started_at=submitted,
                        )
                    )
                )
                for k, h in enumerate(hosts)
            ]
            for t in threads:
                t.start()
            return threads

        def joined(threads: list[threading.Thread]) -> None:
            for t in threads:
                t.join(timeout=600)
                assert not t.is_alive(), "a sender still running after 10 minutes"

        def sent_of_phase(k: int, phase: tuple[int, int]) -> int:
            return sum(k * PER_HOST + i in submitted for i in range(*phase))

        with Watcher(sentinels) as watch:
            began = time.monotonic()
            sending = senders(PHASES[0])
            # Gmail throttles out2, at every host
            # progress, not a total time: this 2-core host's speed sets how long 4,000 take
            wait_for_progress(delivered, THROTTLE_AT, MAIL_S, f"{THROTTLE_AT} deliveries")
            for sink in (postfix_sink, exim_sink):
                sink.script(OUT2, "gmail.com", GMAIL_421)
            wait_until(lambda: watch.suspended_at, 30, "the (out2, google) suspension")
            suspended_at = watch.suspended_at
            assert suspended_at is not None
            at_suspension = delivered()
            wait_for_progress(delivered, at_suspension + AFTER_THROTTLE, MAIL_S, "mail after the throttle")
            for sink in (postfix_sink, exim_sink):
                sink.clear_scripts()
            joined(sending)
            # the master dies while every host is sending: each has begun its second
            # part, and a host that finished it early still has the third to come
            sending = senders(PHASES[1])
            wait_for_progress(
                lambda: sum(min(sent_of_phase(k, PHASES[1]), KILL_INTO) for k in range(len(hosts))),
                KILL_INTO * len(hosts),
                MAIL_S,
                f"{KILL_INTO} messages of each host's second part",
            )
            killed_wall = time.time()  # decision lines are stamped with the real time
            killed_at = time.monotonic()
            sentinels.kill_master()
            sentinels.wait_failover()
            failover_s = time.monotonic() - killed_at
            failed_over_wall = time.time()  # every sentinel names the new master (0.1 s polls)
            joined(sending)
            # every host decides after the failover, so each shows when it was back
            joined(senders(PHASES[2]))
            sent_s = time.monotonic() - began
        assert errors == []

        # every message arrives, once: deferred ones too
        for h in hosts:
            h.flush()
        wait_for_progress(delivered, TOTAL, MAIL_S, f"all {TOTAL} messages")
        for h in hosts:
            wait_until(h.queue_empty, MAIL_S, f"{h.name}'s queue to empty")
        got = postfix_sink.messages + exim_sink.messages
        seqs = Counter(int(m.header("X-Test-Seq") or -1) for m in got)
        assert sorted(seqs) == list(range(TOTAL)) and max(seqs.values()) == 1, "lost or twice"

        # warm-up caps, fleet-wide, exact
        via_out3 = [m for m in got if m.peer_ip == OUT3]
        assert len(via_out3) == WARM_TOTAL
        assert sum(m.rcpt_tos[0].endswith("@gmail.com") for m in via_out3) == WARM_GOOGLE

        # the suspension: no Gmail mail submitted a second after it left through out2, on any host
        gmail_out2 = [m for m in got if m.peer_ip == OUT2 and m.rcpt_tos[0].endswith("@gmail.com")]
        last_out2_gmail = max(submitted[int(m.header("X-Test-Seq") or -1)] for m in gmail_out2)
        late = [
            m
            for m in gmail_out2
            if submitted[int(m.header("X-Test-Seq") or -1)] > suspended_at + PROPAGATION_S
        ]
        assert late == [], f"{len(late)} gmail messages through out2 after the suspension"
        for h in hosts:  # each host had Gmail mail to decide after it, and sent it elsewhere
            after = [
                m
                for m in got
                if m.header("X-Test-Tag") == h.name
                and m.rcpt_tos[0].endswith("@gmail.com")
                and submitted[int(m.header("X-Test-Seq") or -1)] > suspended_at + PROPAGATION_S
            ]
            assert len(after) >= 20, (h.name, len(after))
        refused_first = min(
            sink.handler.first_refused_at.get((OUT2, "gmail.com"), float("inf"))
            for sink in (postfix_sink, exim_sink)
        )

        # the rate cap: in any 58 s of decision times, at most RATE on out1 (a decision
        # counts in its own second or the next, and the window is 61 whole seconds)
        lines = [line for h in hosts for line in decision_lines(h.policyd.log_path)]
        out1_times = sorted(wall_ts(line) for line in lines if line.get("endpoint") == "out1")
        assert most_in_any(out1_times, 58) <= RATE
        assert watch.window_max == RATE

        # the failover: a host decides without Redis (degraded) from when it notices the
        # kill until it has the new master, then with Redis again: within FOLLOW_S of the
        # promotion (how long Sentinel takes to promote is Sentinel's). Its mirror answers
        # some decisions before it notices; a host may notice nothing.
        back: dict[str, float] = {}
        for h in hosts:
            after_kill = [d for d in decision_lines(h.policyd.log_path) if wall_ts(d) > killed_wall]
            degraded = [wall_ts(d) for d in after_kill if d["degraded"] == "true"]
            last_degraded = max(degraded, default=killed_wall)
            assert any(wall_ts(d) > last_degraded and d["degraded"] == "false" for d in after_kill), h.name
            back[h.name] = last_degraded - killed_wall
        assert max(back.values()) <= failed_over_wall - killed_wall + FOLLOW_S, (failover_s, back)

        # counted once: each endpoint's day counter is its deliveries, once the deciders
        # have stopped (they write counts in batches and give leases back at exit); the
        # feedback daemons counted each delivery once
        new = redis.Redis("127.0.0.1", sentinels.replica_port, decode_responses=True)
        by_ip = Counter(m.peer_ip for m in got)
        deciders = [h.policyd for h in hosts]
        for name, ip in ENDPOINT_IP.items():
            assert_counted_exactly(new, [name], by_ip[ip], deciders)
        for h in hosts:  # each feedback daemon has read its whole log: an event, not a pause

            def read_to_end(h: Host = h) -> bool:
                position = new.get(f"{{sb}}:feedback:{h.name}:position") or "0 0"
                return int(position.split(" ")[1]) >= h.log_file.stat().st_size

            try:
                wait_until(read_to_end, MAIL_S, f"{h.name}'s feedback daemon at the end of its log")
            except WaitTimeout as exc:
                # what the next look needs: the two figures and what the daemon said
                saved = new.get(f"{{sb}}:feedback:{h.name}:position")
                raise WaitTimeout(
                    f"{exc}: saved position {saved!r}, log size {h.log_file.stat().st_size},"
                    f" the MTA log ends {h.log_file.read_bytes()[-400:]!r};"
                    f" its feedback daemon's log ends:\n{h.feedback.log_tail(60)}"
                ) from exc
        through_endpoints = sum(by_ip[ip] for ip in ENDPOINT_IP.values())
        figures = {
            "messages": TOTAL,
            "hosts": len(hosts),
            "sent_s": round(sent_s, 1),
            "msg_per_s": round(TOTAL / sent_s),
            "first_421_to_suspension_s": round(suspended_at - refused_first, 2),
            "suspension_to_last_out2_gmail_submission_s": round(last_out2_gmail - suspended_at, 2),
            "out3_total": len(via_out3),
            "by_default_transport": TOTAL - through_endpoints,
            "out1_rate_window_max": watch.window_max,
            "failover_s": round(failover_s, 1),
            "last_degraded_decision_after_kill_s": {k: round(v, 2) for k, v in back.items()},
        }
        print("fleet of eight:", json.dumps(figures))
        # outcomes are per endpoint: mail the MTA's default transport took has none
        outcomes_sent = sum(int(new.hget(k, "sent") or 0) for k in new.scan_iter("{sb}:outcomes:*"))
        assert outcomes_sent == through_endpoints, figures
