"""Domains this host receives mail for: never routed through an endpoint.

A message's route applies to all its recipients (Postfix FILTER overrides
transport_maps), so one recipient in a local, virtual or relay (gateway) domain
would leave through an egress endpoint to that domain's public address: a loop
or a bounce for a domain whose MX is this host, a bypassed backend for a gateway.
"""

from __future__ import annotations

from collections.abc import Iterable


class InboundDomains:
    """``example.com`` matches that domain; ``.example.com`` its subdomains (as Postfix's
    relay_domains and mydestination read them under compatibility_level 3)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.exact = frozenset(p for p in patterns if not p.startswith("."))
        self.parents = frozenset(p[1:] for p in patterns if p.startswith("."))

    def __bool__(self) -> bool:
        return bool(self.exact or self.parents)

    def __contains__(self, domain: str) -> bool:
        if domain in self.exact:
            return True
        parent = domain.partition(".")[2]
        while parent:
            if parent in self.parents:
                return True
            parent = parent.partition(".")[2]
        return False
