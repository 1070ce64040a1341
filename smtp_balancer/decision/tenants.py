"""Tenants: a bounded sender-domain dimension for metrics and ``status``. Sans I/O.

A tenant is a configured sender domain (``tenants:``); a subdomain counts for its
parent (bounces.shop.example is shop.example), and every other sender, the null
sender of bounces included, is ``other``. The label set stays as small as the config.
"""

from __future__ import annotations

from collections.abc import Iterable

OTHER = "other"


class TenantTable:
    def __init__(self, domains: Iterable[str]) -> None:
        self.domains = frozenset(d.lower().rstrip(".") for d in domains)

    def __bool__(self) -> bool:
        return bool(self.domains)

    def of(self, sender: str) -> str:
        """The tenant of an envelope sender or a domain: the nearest configured parent."""
        domain = sender.rpartition("@")[2].strip().strip("<>").lower().rstrip(".")
        while domain:
            if domain in self.domains:
                return domain
            domain = domain.partition(".")[2]
        return OTHER
