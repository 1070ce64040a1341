"""Run the requeue daemon: ``smtp-balancer requeue`` (root: postsuper needs it).

Every ``requeue.interval`` it reads this host's deferred queue and moves mail
bound to routes that became ineligible (see requeue/plan.py for which), at most
``requeue.max_per_second`` messages a second on average. ``--once`` sweeps once
and prints what it did: an operator's `drain --requeue` takes effect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

import redis

from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.config.requeue import RequeueConfig
from smtp_balancer.engine import Engine
from smtp_balancer.observe.metrics import serve_metrics
from smtp_balancer.observe.sdnotify import service
from smtp_balancer.requeue import metrics
from smtp_balancer.requeue.postfix_queue import PostfixQueue, PostfixQueueError
from smtp_balancer.requeue.sweeper import Sweeper, SweepResult
from smtp_balancer.state.client import describe, sync_client

log = logging.getLogger("smtp_balancer.requeue")
SWEEP_BUDGET_MS = 1000  # a move is not in a hurry: select.lua may take longer than at intake


def remote_decisions(config: BalancerConfig) -> BalancerConfig:
    """Every move is decided by select.lua (counted in Redis, exactly), never from a
    local mirror: these processes decide a few messages a second, not thousands."""
    decision = config.decision.model_copy(update={"local": False, "budget_ms": SWEEP_BUDGET_MS})
    return config.model_copy(update={"decision": decision})


def summary(result: SweepResult) -> str:
    bound = ", ".join(f"{ep} {n}" for ep, n in sorted(result.bound.items())) or "none"
    lines = [
        f"deferred messages: {result.deferred} (bound to endpoints: {bound})",
        f"moved: {len(result.moved)}, left in place: {result.skipped}",
    ]
    lines += [f"  {qid}: {old} -> {new} ({why})" for qid, old, new, why in result.moved]
    return "\n".join(lines)


async def serve(config: BalancerConfig, once: bool = False) -> int:
    rq = config.requeue
    if not rq.enabled:
        log.error("requeue.enabled is off: Postfix has no delivery-time table for moved mail to use")
        return 2
    try:
        queue = PostfixQueue(rq.postfix_config_dir)
    except PostfixQueueError as exc:
        log.error("cannot read the Postfix instance at %s: %s", rq.postfix_config_dir, exc)
        return 2
    if not once:
        serve_metrics(rq.metrics_listen, log, "requeue.metrics_listen")
    engine = Engine(remote_decisions(config))
    await engine.start()
    client = sync_client(config.redis)
    sweeper = Sweeper(config, engine, client, queue, rq.instance or socket.gethostname())
    try:
        # said at start too, not only when there is mail to move (each sweep checks again)
        with contextlib.suppress(PostfixQueueError):
            await sweeper.wired()
        sweeper.notes.flush()
        async with service("requeue", "sweeping the deferred queue") as stop:
            return await sweep_until_stopped(sweeper, rq, once, stop, describe(config.redis))
    finally:
        sweeper.notes.flush(everything=True)
        client.close()
        await engine.aclose()


async def sweep_until_stopped(
    sweeper: Sweeper, rq: RequeueConfig, once: bool, stop: asyncio.Event, where: str
) -> int:
    """Sweep every ``rq.interval`` until ``stop`` (or once); the exit status of the last sweep."""
    status = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            result = await sweeper.sweep(rq.max_per_second * rq.interval)
            metrics.SWEEPS.labels("ok").inc()
            if once:
                print(summary(result))
        except redis.RedisError as exc:
            metrics.SWEEPS.labels("redis_error").inc()
            sweeper.notes.emit(logging.ERROR, "redis", "Redis at %s: %s; nothing moved", where, exc)
            status = 3
        except PostfixQueueError as exc:
            metrics.SWEEPS.labels("postfix_error").inc()
            sweeper.notes.emit(logging.ERROR, "postfix", "Postfix: %s; nothing more moved this sweep", exc)
            status = 2
        except Exception:  # a bug: say so, and sweep again next time
            metrics.SWEEPS.labels("error").inc()
            log.exception("sweep failed; trying again in %ss", rq.interval)
            status = 1
        sweeper.notes.flush()
        if once:
            break
        status = 0
        wait = max(0.0, rq.interval - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
    return status


def run(config: BalancerConfig, once: bool = False) -> int:
    return asyncio.run(serve(config, once))
