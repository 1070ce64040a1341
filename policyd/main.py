"""Run the policy daemon: ``smtp-balancer policyd -c /etc/smtp-balancer/config.yaml``."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal

from prometheus_client import start_http_server
from smtp_balancer_policyd.server import PolicyServer

from smtp_balancer.config import BalancerConfig
from smtp_balancer.config.model import parse_hostport
from smtp_balancer.engine import Engine

log = logging.getLogger("smtp_balancer.policyd")


def raise_fd_limit() -> None:
    """Each smtpd process holds a connection: allow as many as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: BalancerConfig) -> None:
    raise_fd_limit()
    if config.policyd.metrics_listen:
        host, port = parse_hostport(config.policyd.metrics_listen)
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)
    engine = Engine(config)
    await engine.warm_up()
    server = PolicyServer(engine, config.policyd)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: closing listeners")
    await server.close()
    await engine.aclose()


def run(config: BalancerConfig) -> int:
    asyncio.run(serve(config))
    return 0
