"""Building blocks shared by every config section: names, strict models, address checks."""

from __future__ import annotations

import ipaddress
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

NAME_RE = r"^[a-z0-9_-]+$"
Name = Annotated[str, Field(pattern=NAME_RE, max_length=64)]


def _domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if len(value) > 253 or not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", value):
        raise ValueError(f"not a domain: {value!r}")
    return value


# a DNS domain, lower-cased, without a trailing dot
Domain = Annotated[str, AfterValidator(_domain)]


def _inbound_domain(value: str) -> str:
    return "." + _domain(value[1:]) if value.startswith(".") else _domain(value)


# a domain, or ".domain" for its subdomains (Postfix's way)
InboundDomain = Annotated[str, AfterValidator(_inbound_domain)]


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


def _takes_bool(annotation: Any) -> bool:
    return annotation is bool or bool in get_args(annotation)


def _numeric(annotation: Any) -> bool:
    """An int or float field (optional or not), where pydantic would take a bool as 1/0."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(arg in (int, float) for arg in get_args(annotation))
    return False


class Strict(BaseModel):
    # each field's docstring describes it in docs/reference/configuration.md, which
    # tools/reference.py generates from the source
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads `workers: yes` as 1; a number field wants a number
        if isinstance(value, bool) and info.field_name is not None:
            field = cls.model_fields.get(info.field_name)
            if field is not None and _numeric(field.annotation) and not _takes_bool(field.annotation):
                raise ValueError(f"a number, not {str(value).lower()}")
        return value


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


def check_hostport(value: str) -> str:
    """A ``host:port`` (or ``[v6]:port``) kept as written; raises ValueError."""
    parse_hostport(value)
    return value


# a Redis node or sentinel to connect to
HostPort = Annotated[str, AfterValidator(check_hostport)]


def check_metrics_listen(value: str) -> str:
    """``host:port`` for a /metrics endpoint, or "" for none; raises ValueError."""
    if value:
        parse_hostport(value)
    return value


# where a daemon serves /metrics: host:port, "" disables it
MetricsListen = Annotated[str, AfterValidator(check_metrics_listen)]
