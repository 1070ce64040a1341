"""Is each local endpoint's bind address on this host? (``decision.bind_check_s``)

An endpoint whose source address is not plumbed here cannot send from here:
Postfix defers everything routed to it ("Cannot assign requested address").
Each decider checks every few seconds by binding a socket to the address
(port 0, nothing is sent) and leaves unplumbed endpoints out of its plans on
every path (``Planner.set_unplumbed``), so this host stops routing to them; the
requeue daemon moves what was already deferred. The check is per host: another
host of the fleet may well have the address.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Mapping

from prometheus_client import Gauge

from smtp_balancer.config.endpoints import same_host
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.engine.tasks import stop_task

log = logging.getLogger("smtp_balancer.engine")

UNPLUMBED = Gauge(
    "smtp_balancer_endpoint_unplumbed",
    "1 while the endpoint's bind address is not on this host: it gets no mail from here",
    ["endpoint"],
    multiprocess_mode="livemax",
)
# errors that mean "not on this host"; anything else (a permission problem) is logged, not acted on
MISSING = {errno.EADDRNOTAVAIL}


HOST_ENV = "SMTP_BALANCER_HOST"


def this_host() -> str:
    """The fleet host this process decides for: $SMTP_BALANCER_HOST, else the host name."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def foreign_endpoints(config: BalancerConfig, host: str) -> dict[str, str]:
    """Endpoint -> its host, for the endpoints another fleet host owns (``host:``)."""
    return {n: ep.host for n, ep in config.endpoints.items() if ep.host and not same_host(ep.host, host)}


def local_addresses(config: BalancerConfig) -> dict[str, tuple[str, ...]]:
    """Endpoint -> its bind addresses (IPv4 and/or IPv6), for local endpoints that name one."""
    endpoints = config.endpoints.items()
    return {name: ep.bind_addresses for name, ep in endpoints if ep.kind == "local" and ep.bind_addresses}


def host_ipv6_addresses(path: str = "/proc/net/if_inet6") -> list[str]:
    """This host's global-scope IPv6 addresses (the kernel's list): where it has any, its
    MTA connects over IPv6 to the providers' AAAA records unless told otherwise."""
    found = []
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 4 and fields[3] == "00" and len(fields[0]) == 32:
                    found.append(str(ipaddress.IPv6Address(int(fields[0], 16))))
    except (OSError, ValueError):
        return []  # no IPv6 on this host, or a kernel without the file
    return found


def bindable(address: str) -> bool | None:
    """True when a socket can bind to the address here, False when it is not on this
    host, None when the check itself failed for another reason."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except OSError as exc:
        if exc.errno in MISSING:
            return False
        log.warning("cannot check bind address %s: %s", address, exc)
        return None
    return True


def unplumbed(
    addresses: Mapping[str, tuple[str, ...]], check: Callable[[str], bool | None] = bindable
) -> dict[str, str]:
    """The endpoints with an address not on this host, each with the missing address(es):
    a dual-stack endpoint missing either family cannot send all its mail from here
    (a failed check counts as present)."""
    found = {}
    for name, addrs in addresses.items():
        missing = [a for a in addrs if check(a) is False]
        if missing:
            found[name] = " and ".join(missing)
    return found


class PlumbingWatch:
    """Runs the check on a schedule and tells ``apply`` when the set changes."""

    def __init__(
        self,
        addresses: Mapping[str, tuple[str, ...]],
        interval_s: float,
        apply: Callable[[dict[str, str]], None],
        check: Callable[[str], bool | None] = bindable,
    ) -> None:
        self.addresses = dict(addresses)
        self.interval_s = interval_s
        self.apply = apply
        self.check = check
        self.current: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def run_once(self) -> dict[str, str]:
        found = unplumbed(self.addresses, self.check)
        if found != self.current:
            for name in sorted(found.keys() - self.current.keys()):
                log.warning(
                    "endpoint %s: bind address %s is not on this host; no mail routed through it"
                    " from here until it is",
                    name,
                    found[name],
                )
            for name in sorted(self.current.keys() - found.keys()):
                log.warning("endpoint %s: bind address %s is back on this host", name, self.current[name])
            self.current = found
            self.apply(found)
        for name in self.addresses:
            UNPLUMBED.labels(name).set(1 if name in found else 0)
        return found

    def start(self) -> None:
        if self.addresses and self.interval_s > 0 and self._task is None:
            self.run_once()  # before the first message
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="bind-check")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.run_once()
            except Exception:  # a check must never stop deciding
                log.exception("bind address check failed; retrying")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
