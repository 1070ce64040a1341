"""Decisions without a round trip: the tracked live state plus quota leases, sans I/O.

While Redis tracks our keys for us (``state/tracker.py``) the mirror is exact up
to the moment an invalidation is in flight, so a decision made from it is the
one select.lua would make. Whenever that cannot be known, ``decide`` returns
None and the engine asks Redis as before:
- the mirror is not fresh (not loaded yet, a key changed and is being re-read,
  the tracking connection is down);
- a capped endpoint is drawn and its lease does not cover the message;
- another thread spent the lease meanwhile.
"""

from __future__ import annotations

import time

from smtp_balancer.choice import NeedRedis, choose
from smtp_balancer.facts import Decision
from smtp_balancer.quota import QuotaBook
from smtp_balancer.selection import Planner, ScriptCall
from smtp_balancer.state.live import LiveState


class LocalDecider:
    def __init__(self, planner: Planner, book: QuotaBook) -> None:
        self.planner = planner
        self.book = book
        self.mirror: LiveState | None = None
        self.fresh = False  # set by the engine: the mirror reflects every tracked write

    def decide(self, call: ScriptCall) -> Decision | None:
        mirror = self.mirror
        if not self.fresh or mirror is None:
            return None
        now, wall_now = time.monotonic(), time.time()
        elig = _Tracked(call, mirror, self.book, now, wall_now)
        try:
            picked = choose(call.plan.stages, call.hashes, call.r, elig)
        except NeedRedis:
            return None
        if picked is None:
            return self.planner.exhausted(call)
        stage_no, endpoint, weight = picked
        stage = call.plan.stages[stage_no]
        leased = not stage.ignore_caps and call.caps[endpoint].capped
        day, hour = call.buckets
        if not self.book.take(endpoint, call.facts.quota_count, call.provider_counts, day, hour, leased):
            return None
        spill = f", overflow from {call.plan.stages[0].pool}" if stage_no else ""
        caps_note = " (caps ignored)" if stage.ignore_caps else ""
        reason = f"weight {weight} in pool {stage.pool}{caps_note}{spill}"
        return self.planner.routed(call, stage, endpoint, reason)


class _Tracked:
    """Eligibility from the exact mirror; capped endpoints by their lease."""

    def __init__(
        self, call: ScriptCall, mirror: LiveState, book: QuotaBook, now: float, wall_now: float
    ) -> None:
        self.call, self.mirror, self.book, self.now, self.wall_now = call, mirror, book, now, wall_now

    def weight(self, pool: str, endpoint: str, yaml_weight: int) -> int:
        return self.mirror.weight(pool, endpoint, yaml_weight)

    def why_not(self, endpoint: str, ignore_caps: bool) -> str | None:
        mirror, call = self.mirror, self.call
        if mirror.is_blocked(endpoint, self.wall_now):
            return "blocked"
        if mirror.suspended(endpoint, call.providers, self.now):
            return "suspended"
        caps = call.caps[endpoint]
        if ignore_caps or not caps.capped:
            return None
        day, hour = call.buckets
        return self.book.check(endpoint, call.facts.quota_count, day, hour, caps.day, caps.hour)

    def throttle(self, endpoint: str) -> float:
        return self.mirror.throttle(endpoint, self.call.providers, self.now)
