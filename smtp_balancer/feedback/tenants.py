"""Tenants: a bounded sender-domain dimension for metrics and ``status``. Sans I/O.

A tenant is a configured sender domain (``tenants:``); a subdomain counts for its
parent (bounces.shop.example is shop.example), and every other sender, the null
sender of bounces included, is ``other``. The label set stays as small as the config.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

OTHER = "other"
BOOK_LIMIT = 100_000  # queue ids remembered between a message's arrival and its deliveries


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


class SenderBook:
    """Queue id -> tenant, from a message's arrival line (Postfix ``from=<>``, Exim ``<=``)
    to the delivery lines that follow it. The oldest entries go first past ``limit``,
    so memory stays flat however long the daemon runs."""

    def __init__(self, limit: int = BOOK_LIMIT) -> None:
        self.limit = limit
        self._tenants: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tenants)

    def note(self, queue_id: str, tenant: str) -> None:
        self._tenants[queue_id] = tenant
        self._tenants.move_to_end(queue_id)
        while len(self._tenants) > self.limit:
            self._tenants.popitem(last=False)

    def tenant(self, queue_id: str) -> str:
        """The message's tenant; ``other`` when its arrival was not seen (before a restart)."""
        return self._tenants.get(queue_id, OTHER)
