"""Building blocks shared by every config section: names, strict models, address checks."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NAME_RE = r"^[a-z0-9_-]+$"
Name = Annotated[str, Field(pattern=NAME_RE, max_length=64)]


def _domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if len(value) > 253 or not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", value):
        raise ValueError(f"not a domain: {value!r}")
    return value


# a DNS domain, lower-cased, without a trailing dot
Domain = Annotated[str, AfterValidator(_domain)]


def check_listen(value: str) -> str:
    """``unix:/absolute/path`` or ``[inet:]host:port``; raises ValueError."""
    if value.startswith("unix:"):
        if not value[5:].startswith("/"):
            raise ValueError(f"unix socket path must be absolute: {value!r}")
    else:
        parse_hostport(value.removeprefix("inet:"))
    return value


def check_cidrs(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"not a CIDR: {value!r}") from exc
    return values


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_nexthop(value: str) -> tuple[str, int]:
    """``host:port`` or ``[host]:port`` -> (host, port); raises ValueError."""
    m = re.fullmatch(r"\[?([A-Za-z0-9.:-]+?)\]?:(\d{1,5})", value.strip())
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ValueError(f"nexthop must be host:port, got {value!r}")
    return m.group(1), int(m.group(2))


def parse_hostport(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be host:port, got {value!r}")
    return host.strip("[]"), int(port)


def check_metrics_listen(value: str) -> str:
    """``host:port`` for a /metrics endpoint, or "" for none; raises ValueError."""
    if value:
        parse_hostport(value)
    return value


# where a daemon serves /metrics: host:port, "" disables it
MetricsListen = Annotated[str, AfterValidator(check_metrics_listen)]
