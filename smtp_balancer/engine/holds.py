"""A daemon's copy of the tenant holds and moves (``state/tenant_holds.py``), kept
fresh on its event loop: the policy daemon answers HOLD, the milter quarantines,
for the tenants it holds; the moves go to the engine's planner, which sends a moved
tenant's mail to its pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.observe.ratelimit import LogLimiter
from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.tenant_holds import read_guards

HOLD_READ_S = 1.0  # how often a daemon reads the holds: a hold applies within this long


class HoldReader:
    """A daemon's copy of the holds, read every ``every_s`` on its event loop (the
    policy daemon's, the milter's engine thread); a change is logged. Nothing ends
    the reads: on an error the holds last read stay in force."""

    def __init__(
        self,
        tenants: Iterable[str],
        log: logging.Logger,
        every_s: float = HOLD_READ_S,
        moves_to: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        """``moves_to``: given tenant -> pool after each read (the engine's ``move_tenants``)."""
        self.table = TenantTable(tenants)
        self.log, self.every_s = log, every_s
        self.notes = LogLimiter(log)  # Redis away: a few lines a minute, not one a second
        self.held: dict[str, str] = {}  # tenant -> why
        self.moved: dict[str, tuple[str, str]] = {}  # tenant -> (pool, why)
        self.moves_to = moves_to

    def of(self, sender: str) -> str | None:
        """The sender's tenant when it is held, else None."""
        if not self.held:
            return None
        tenant = self.table.of(sender)
        return tenant if tenant in self.held else None

    async def keep_fresh(self, channel: Callable[[], ScriptChannel], keys: KeySchema) -> None:
        while True:
            try:
                held, moved = await read_guards(channel(), keys)
            except Exception as exc:  # never the end of the reads: the last holds stay
                self.notes.warning("tenant holds", "tenant holds not read: %s", exc)
            else:
                self._adopt(held, moved)
            await asyncio.sleep(self.every_s)

    def _adopt(self, held: dict[str, str], moved: dict[str, tuple[str, str]]) -> None:
        for tenant in sorted(set(held) - set(self.held)):
            self.log.warning("tenant %s held: its new mail goes to the hold queue (%s)", tenant, held[tenant])
        for tenant in sorted(set(self.held) - set(held)):
            self.log.warning("tenant %s released: its new mail is routed again", tenant)
        for tenant in sorted(t for t in moved if moved[t] != self.moved.get(t)):
            pool, why = moved[tenant]
            self.log.warning("tenant %s moved: its new mail goes to pool %s (%s)", tenant, pool, why)
        for tenant in sorted(set(self.moved) - set(moved)):
            self.log.warning("tenant %s moved back: its new mail is routed by its rules again", tenant)
        self.held, self.moved = held, moved
        if self.moves_to is not None:
            self.moves_to({tenant: pool for tenant, (pool, _) in moved.items()})
