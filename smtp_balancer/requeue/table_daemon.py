"""Run the delivery-time table: ``smtp-balancer table`` (Postfix socketmap, unprivileged).

A process of its own, apart from the policy daemon and the (root) requeue daemon:
a dead or frozen table delays only mail that has no FILTER (moved mail waits in
the queue), never intake and never FILTERed mail.
"""

from __future__ import annotations

import asyncio
import logging

from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.engine import Engine
from smtp_balancer.observe.metrics import serve_metrics
from smtp_balancer.observe.sdnotify import service
from smtp_balancer.requeue.daemon import remote_decisions
from smtp_balancer.requeue.table import RouteTable, TableServer

log = logging.getLogger("smtp_balancer.table")


async def serve(config: BalancerConfig) -> int:
    if not config.requeue.enabled:
        log.error("requeue.enabled is off: Postfix is not configured to ask this table")
        return 2
    serve_metrics(config.requeue.table_metrics_listen, log, "requeue.table_metrics_listen")
    # each decision here is select.lua's (counted in Redis at once): moved mail is a
    # trickle, and a dead table daemon then holds no unwritten counts
    engine = Engine(remote_decisions(config))
    await engine.start()
    server = TableServer(
        RouteTable(engine, config.redis.admin_timeout_ms / 1000), config.requeue.table_listen
    )
    try:
        await server.start()
    except BaseException:
        await engine.aclose()
        raise
    async with service("table", "serving the delivery-time table") as stop:
        await stop.wait()
    await server.close()
    server.table.notes.flush(everything=True)
    await engine.aclose()
    return 0


def run(config: BalancerConfig) -> int:
    return asyncio.run(serve(config))
