"""Run the milter: ``smtp-balancer milter -c /etc/smtp-balancer/config.yaml``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import Milter
from smtp_balancer_milter.app import MilterSettings, milter_factory

from smtp_balancer.config import BalancerConfig
from smtp_balancer.config.base import parse_hostport
from smtp_balancer.engine import ThreadedEngine
from smtp_balancer.observe.metrics import serve_metrics

log = logging.getLogger("smtp_balancer.milter")


def libmilter_socket(listen: str) -> str:
    """Our listen syntax to libmilter's: unix:/path stays, inet:host:port -> inet:port@host."""
    if listen.startswith("unix:"):
        return listen
    host, port = parse_hostport(listen.removeprefix("inet:"))
    return f"inet:{port}@{host}"


def run(config: BalancerConfig) -> int:
    cfg = config.milter
    serve_metrics(cfg.metrics_listen, log, "milter.metrics_listen")
    engine = ThreadedEngine(config)
    # as the policy daemon does: connect, load the script and take the first
    # live-state snapshot before the first message, not inside its budget
    engine.start()
    Milter.factory = milter_factory(engine, MilterSettings.from_config(cfg))
    Milter.set_flags(Milter.ADDHDRS + Milter.CHGHDRS)
    socket = libmilter_socket(cfg.listen)
    if socket.startswith("unix:"):
        Path(socket[5:]).parent.mkdir(parents=True, exist_ok=True)
    # libmilter creates the socket itself: the umask decides its mode (postfix must connect)
    os.umask(0o777 & ~int(cfg.socket_mode, 8))
    log.info("milter listening on %s", socket)
    try:
        Milter.runmilter("smtp-balancer", socket, cfg.timeout_s)
    finally:
        engine.close()
    return 0
