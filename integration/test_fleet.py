"""A fleet: two Postfix servers, each with its own policy daemon, one Redis.

The warming IP's day cap holds fleet-wide and fills exactly, and until it is
reached the warming IP gets its weight share (binomial test, false-failure rate
below 1e-7). Before draws were settled once, it got 3-8% instead of 25% here.
In the second run one host's daemon is a supervisor of two workers
(policyd.workers): three deciding processes share the cap.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.conftest import base_config, render, start_redis, write_config
from integration.daemons import PolicydProcess, decision_lines
from integration.postfix import PostfixInstance, make_shared_dir
from integration.sink import Sink, free_port
from integration.statistics import assert_binomial
from integration.submit import send_many
from integration.waits import wait_until
from smtp_balancer.clock import utc_now

CAP = 50
PER_HOST = 300


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "workers"])
def test_two_hosts_fill_one_warmup_cap_exactly_at_its_weight_share(workers: int):
    if shutil.which("postfix") is None or shutil.which("redis-server") is None:
        pytest.fail("postfix and redis-server must be installed (make test installs them)")
    started: list[Callable[[], None]] = []
    bases: list[Path] = []
    ok = False
    try:
        shared = make_shared_dir("sb-fleet-")
        bases.append(shared)
        redis_server = start_redis(shared, started)
        sink = Sink()
        sink.start()
        started.append(sink.stop)
        warm = {"endpoints": {"out3": {"warmup": {"start": utc_now().date().isoformat(), "schedule": [CAP]}}}}
        hosts: list[tuple[PostfixInstance, PolicydProcess]] = []
        for host in range(2):
            base = make_shared_dir("sb-fleet-")
            bases.append(base)
            policy_port = free_port()
            extra = {**warm, "policyd": {"workers": workers if host else 1}}
            config = write_config(base, base_config(redis_server.url, policy_port, free_port()), extra)
            policyd = PolicydProcess(config, policy_port, base / "policyd.log")
            policyd.start()
            started.append(policyd.stop)
            postfix = PostfixInstance(
                base / "postfix",
                smtpd_port=free_port(),
                sink_port=sink.port,
                master_cf_extra=render(config, "master"),
                main_cf_extra=render(config, "main"),
            )
            started.append(postfix.stop)
            postfix.start()
            hosts.append((postfix, policyd))

        errors: list[str] = []
        senders = [
            threading.Thread(
                target=lambda port=postfix.smtpd_port, start=k * PER_HOST: errors.extend(
                    send_many(port, PER_HOST, threads=4, start=start)
                )
            )
            for k, (postfix, _) in enumerate(hosts)
        ]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        assert errors == []
        got = sink.wait_for(2 * PER_HOST, timeout=180)
        by_ip = Counter(m.peer_ip for m in got)
        assert by_ip["127.0.0.4"] == CAP, by_ip  # out3, fleet-wide

        # the decisions of both daemons, in time order, up to out3's last one; info lines
        # are written every 0.2 s, so the last ones may still be on their way
        def all_lines() -> list[dict[str, str]]:
            return [line for _, policyd in hosts for line in decision_lines(policyd.log_path)]

        wait_until(lambda: len(all_lines()) >= 2 * PER_HOST, timeout=10, what="every decision line")
        lines = sorted(all_lines(), key=lambda line: line["ts"])
        picks = [line.get("endpoint", "") for line in lines]
        assert picks.count("out3") == CAP and len(picks) == 2 * PER_HOST
        before_cap = picks[: max(i for i, e in enumerate(picks) if e == "out3")]
        assert_binomial(before_cap.count("out3"), len(before_cap), 0.25)
        ok = True
    finally:
        for stop in reversed(started):
            try:
                stop()
            except Exception as exc:  # keep tearing down the rest
                print(f"teardown: {exc}", file=sys.stderr)
        if ok:
            for base in bases:
                shutil.rmtree(base, ignore_errors=True)
