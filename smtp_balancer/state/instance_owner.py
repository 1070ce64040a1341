"""Which feedback daemon follows an instance's log: a Redis key with a TTL, claimed,
renewed and released by ``owner.lua`` alone, so two daemons given the same
``feedback.instance`` never both move its saved position."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from smtp_balancer.state import scripts
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import text_of


@dataclass(frozen=True)
class Ownership:
    """What ``owner.lua`` did: ``outcome`` is claimed, renewed, released, held (another
    daemon's, left alone) or replaced; ``found`` the value that was there ("" when none),
    ``ttl_ms`` its time left."""

    outcome: str
    found: str
    ttl_ms: int

    @property
    def ours(self) -> bool:
        return self.outcome in ("claimed", "renewed", "replaced")


class InstanceOwner:
    def __init__(
        self, client: redis.Redis, keys: KeySchema, instance: str, holder: str, lease_ms: int
    ) -> None:
        self.r = client
        self.key = keys.feedback_owner(instance)
        self.holder = holder
        self.lease_ms = lease_ms

    def _run(self, lease_ms: int, stale: str = "") -> Ownership:
        reply = self.r.eval(scripts.OWNER.text, 1, self.key, self.holder, lease_ms, stale)
        outcome, found, ttl = reply
        return Ownership(text_of(outcome) or "", text_of(found) or "", int(ttl))

    def claim(self, stale: str = "") -> Ownership:
        """Take the instance if nobody holds it (or ``stale``, a holder judged dead, does);
        renew it if we do."""
        return self._run(self.lease_ms, stale)

    def release(self) -> Ownership:
        """Give the instance up, if it is still ours."""
        return self._run(0)
