"""Run the policy daemon: ``smtp-balancer policyd -c /etc/smtp-balancer/config.yaml``."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal

from policyd import metrics
from policyd.loop import PolicyLoop
from policyd.server import PolicyServer
from smtp_balancer.config import BalancerConfig, ConfigInvalid, load_config
from smtp_balancer.decision.classes import MessageClasses
from smtp_balancer.engine import Engine
from smtp_balancer.observe.metrics import serve_metrics
from smtp_balancer.observe.sdnotify import service

log = logging.getLogger("smtp_balancer.policyd")


def raise_fd_limit() -> None:
    """Each smtpd process holds a connection: allow as many as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def reload(path: str, engine: Engine, server: PolicyServer) -> None:
    """SIGHUP: adopt the YAML if it is valid; otherwise say why and keep serving the old one.
    The whole decider is built again; policyd settings that shape sockets need a restart."""
    try:
        config = load_config(path)
    except ConfigInvalid as exc:
        metrics.RELOADS.labels("error").inc()
        log.error("config reload refused, still serving the previous config: %s", exc)
        return
    except Exception as exc:  # an unreadable file must not end the daemon or go unlogged
        metrics.RELOADS.labels("error").inc()
        log.error("config reload failed, still serving the previous config: %s: %s", type(exc).__name__, exc)
        return
    server.exim_timeout_s = config.exim.readsocket_timeout_s
    server.classes = MessageClasses.from_config(config.milter)
    for name in server.apply(config.policyd):
        log.warning("policyd.%s changed: it takes effect on restart, not on reload", name)
    await engine.replace_config(config)
    metrics.RELOADS.labels("ok").inc()
    log.info("config reloaded from %s", path)


async def serve(config: BalancerConfig, path: str) -> None:
    raise_fd_limit()
    serve_metrics(config.policyd.metrics_listen, log, "policyd.metrics_listen")
    engine = Engine(config)
    await engine.start()
    server = PolicyServer(
        engine, config.policyd, config.exim.readsocket_timeout_s, MessageClasses.from_config(config.milter)
    )
    try:
        await server.start()
    except BaseException:
        await engine.aclose()
        raise
    async with service("serving policy requests") as stop:
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[None]] = set()

        def on_hup() -> None:
            task = loop.create_task(reload(path, engine, server))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await stop.wait()
    log.info("stopping: closing listeners")
    await server.close()
    await engine.aclose()


def run(config: BalancerConfig, path: str) -> int:
    with asyncio.Runner(loop_factory=PolicyLoop) as runner:
        runner.run(serve(config, path))
    return 0
