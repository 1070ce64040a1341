"""Run the policy daemon: ``smtp-balancer policyd -c /etc/smtp-balancer/config.yaml``."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import stat
from collections.abc import Callable, Coroutine
from typing import Any

from policyd import metrics
from policyd.handover import NO_HANDOVER, Predecessor, handover_link, take_over
from policyd.loop import PolicyLoop
from policyd.server import PolicyServer, warn_restart
from policyd.workers import run_supervisor
from smtp_balancer.config import BalancerConfig, ConfigInvalid, load_config
from smtp_balancer.decision.classes import MessageClasses
from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.engine import Engine
from smtp_balancer.observe.metrics import MULTIPROCESS, ListenError, refresh_observed, serve_metrics
from smtp_balancer.observe.sdnotify import Notifier, service

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
    server.holds.table = TenantTable(config.tenants)
    restart = server.apply(config.policyd)
    if server.link is None:  # a worker's supervisor says it once for all
        warn_restart(restart)
    await engine.replace_config(config)
    metrics.RELOADS.labels("ok").inc()
    log.info("config reloaded from %s", path)


async def worker_beat(server: PolicyServer) -> None:
    """Every second: the worker's function-backed gauges written to its metrics file,
    and a sign of life to its supervisor, which ends a worker whose loop froze."""
    while True:
        refresh_observed()
        server.alive()
        await asyncio.sleep(1)


def policy_server(engine: Engine, config: BalancerConfig) -> PolicyServer:
    """The policy server the daemon runs, with its settings from ``config``."""
    return PolicyServer(
        engine,
        config.policyd,
        config.exim.readsocket_timeout_s,
        MessageClasses.from_config(config.milter),
        config.tenants,
    )


async def serve(config: BalancerConfig, path: str, control: int | None = None) -> None:
    """``control``: a worker's line to its supervisor (policyd/workers.py), which
    listens, serves /metrics and passes connections; None: a daemon on its own, or the
    successor of one that hands it its sockets (policyd/handover.py)."""
    raise_fd_limit()
    link = handover_link() if control is None else None
    close_metrics: Callable[[], None] = lambda: None  # noqa: E731

    def bind_metrics() -> None:
        nonlocal close_metrics
        close_metrics = serve_metrics(config.policyd.metrics_listen, log, "policyd.metrics_listen")

    if control is None and link is None:
        bind_metrics()
    engine = Engine(config)
    await engine.start()
    server = policy_server(engine, config)
    notifier = Notifier()
    if control is None:
        try:
            if link is None:
                await server.start()
            else:
                await take_over(server, link, lambda: _metrics_or_none(bind_metrics), notifier.send)
        except BaseException:
            await engine.aclose()
            raise
    async with service("policyd", "serving policy requests", notifier) as stop:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()

        def background(step: Coroutine[Any, Any, None]) -> None:
            task = loop.create_task(step)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, lambda: background(reload(path, engine, server)))
        # tenants configured at start: their holds are read (a reload that adds the first
        # tenants takes a restart to read holds)
        holds = loop.create_task(server.watch_holds()) if config.tenants else None
        if control is not None:  # ready only now: the supervisor forwards SIGHUP once it is
            server.workers = config.policyd.workers
            server.adopt(socket.socket(fileno=control), stop.set)
            loop.add_signal_handler(signal.SIGUSR2, lambda: log.warning(NO_HANDOVER))
        else:
            handover = Predecessor(server, stop, lambda: close_metrics(), notifier.retire)
            loop.add_signal_handler(signal.SIGUSR2, lambda: background(handover.hand_over()))
        # a worker's; or a lone daemon's whose environment asks for multiprocess metrics
        beat = loop.create_task(worker_beat(server)) if control is not None or MULTIPROCESS else None
        await stop.wait()
        for task in (beat, holds):
            if task is not None:
                task.cancel()
    # a worker has no listeners of its own (its supervisor closed them)
    log.info("stopping: closing listeners" if control is None else "stopping: closing connections")
    await server.close()
    await engine.aclose()


def _metrics_or_none(bind: Callable[[], None]) -> None:
    """A successor's /metrics: a port it cannot bind costs the metrics, not the mail."""
    try:
        bind()
    except ListenError as exc:
        log.error("%s; serving without /metrics until the next restart", exc)


def run(
    config: BalancerConfig,
    path: str,
    log_level: str = "info",
    log_format: str = "logfmt",
    control: int | None = None,
) -> int:
    """One daemon, or with ``policyd.workers`` above 1 a supervisor of that many
    (``control`` set: this process is one of them)."""
    if control is None and config.policyd.workers > 1:
        return run_supervisor(config, path, log_level, log_format)
    if control is not None:
        try:
            is_socket = stat.S_ISSOCK(os.fstat(control).st_mode)
        except OSError:
            is_socket = False
        if not is_socket:
            raise ValueError(
                f"--worker-control {control}: not a socket (the policy supervisor sets this option)"
            )
    with asyncio.Runner(loop_factory=PolicyLoop) as runner:
        runner.run(serve(config, path, control))
    return 0
