"""The ``requeue:`` section: moving queued mail off routes that became ineligible."""

from __future__ import annotations

from pydantic import Field, field_validator

from smtp_balancer.config.base import MetricsListen, Strict, parse_hostport
from smtp_balancer.config.feedback import Seconds


class RequeueConfig(Strict):
    # renders the delivery-time table into main.cf/master.cf; `smtp-balancer table`
    # serves it and `smtp-balancer requeue` moves mail
    enabled: bool = False
    # the Postfix socketmap table (transport_maps) `smtp-balancer table` serves: host:port
    table_listen: str = "127.0.0.1:10041"
    table_metrics_listen: MetricsListen = "127.0.0.1:9484"
    # your own transport_maps, if any: rendered after our table, and kept for smtpd
    postfix_transport_maps: str = ""
    # the Postfix instance whose deferred queue is swept (postconf -c)
    postfix_config_dir: str = "/etc/postfix"
    # how often the deferred queue is read
    interval: Seconds = Field(default=10, ge=1, le=3600)
    # at most this many messages moved per second: a large backlog leaves gradually
    max_per_second: int = Field(default=50, ge=1, le=10_000)
    # how long a moved recipient's route is kept (Postfix's maximal_queue_lifetime)
    pin_ttl: Seconds = Field(default=432_000, ge=60, le=2_592_000)
    # move mail off an endpoint the health checks (DNSBL, relay probe) quarantined
    health_quarantines: bool = True
    # names this host's queued-mail counts in Redis (default: hostname)
    instance: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    # the requeue daemon's /metrics
    metrics_listen: MetricsListen = "127.0.0.1:9483"

    @field_validator("table_listen")
    @classmethod
    def _table_listen(cls, value: str) -> str:
        parse_hostport(value.removeprefix("inet:"))
        return value.removeprefix("inet:")
