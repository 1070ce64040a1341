"""The arrival join: which tenant a queue id's deliveries belong to. Sans I/O.

Tenants themselves (``TenantTable``) are decision/tenants.py.
"""

from __future__ import annotations

from collections import OrderedDict

from smtp_balancer.decision.tenants import OTHER

BOOK_LIMIT = 100_000  # queue ids remembered between a message's arrival and its deliveries


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
