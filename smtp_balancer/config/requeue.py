"""The ``requeue:`` section: moving queued mail off routes that became ineligible."""

from __future__ import annotations

from pydantic import Field, field_validator

from smtp_balancer.config.base import MetricsListen, Strict, parse_hostport
from smtp_balancer.config.feedback import Seconds


class RequeueConfig(Strict):
    # renders the delivery-time table into main.cf/master.cf; `smtp-balancer table`
    # serves it and `smtp-balancer requeue` moves mail
    enabled: bool = False
    """Renders the table into main.cf/master.cf and the Exim routers."""
    # the Postfix socketmap table (transport_maps) `smtp-balancer table` serves: host:port
    table_listen: str = "127.0.0.1:10041"
    """Where `smtp-balancer table` listens: Postfix's socketmap and Exim's readsocket ask it."""
    table_metrics_listen: MetricsListen = "127.0.0.1:9484"
    """The table daemon's /metrics (host:port)"""
    # your own transport_maps, if any: rendered after our table, and kept for smtpd
    postfix_transport_maps: str = ""
    """Your own transport_maps, rendered after ours (and kept for smtpd)"""
    # the Postfix instance whose deferred queue is swept (postconf -c)
    postfix_config_dir: str = "/etc/postfix"
    """The instance whose deferred queue `smtp-balancer requeue` sweeps."""
    # how often the deferred queue is read
    interval: Seconds = Field(default=10, ge=1, le=3600)
    """How often it sweeps."""
    # at most this many messages moved per second: a large backlog leaves gradually
    max_per_second: int = Field(default=50, ge=1, le=10_000)
    """At most interval x this many messages moved per sweep."""
    # how long a moved recipient's route is kept (Postfix's maximal_queue_lifetime)
    pin_ttl: Seconds = Field(default=432_000, ge=60, le=2_592_000)
    """How long a moved recipient's route is kept (maximal_queue_lifetime)"""
    # move mail off an endpoint the health checks (DNSBL, relay probe) quarantined
    health_quarantines: bool = True
    """Also move mail off endpoints DNSBL checks or probes quarantined."""
    # names this host's queued-mail counts in Redis (default: hostname)
    instance: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    """Names this host's queued counts in `status`; "" means the hostname."""
    # the requeue daemon's /metrics
    metrics_listen: MetricsListen = "127.0.0.1:9483"
    """The requeue daemon's /metrics."""

    @field_validator("table_listen")
    @classmethod
    def _table_listen(cls, value: str) -> str:
        parse_hostport(value.removeprefix("inet:"))
        return value.removeprefix("inet:")
