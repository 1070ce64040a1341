"""Undoing what a decision counted, for mail that leaves by another route: its client
stopped waiting before the answer (``unless_gone``), or select.lua's reply came after
the decision went on without it (the engine's late-reply path)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from smtp_balancer.decision.draw import Draw
from smtp_balancer.decision.facts import Decision
from smtp_balancer.decision.quota import QuotaBook
from smtp_balancer.decision.rates import rate_second

log = logging.getLogger("smtp_balancer.engine")

# asked once a decision is made: why its client no longer waits for it ("" while it
# does); a route it took is then given back and not answered
StillWaited = Callable[[], str]


def give_back(book: QuotaBook, draw: Draw, endpoint: str, rates: bool = True) -> None:
    """Undo what routing ``draw`` to ``endpoint`` counted: quota, and its rate entries."""
    day, hour = draw.buckets
    book.give_back(endpoint, draw.facts.quota_count, draw.provider_counts, day, hour)
    scopes = draw.caps[endpoint].rate_scopes(draw.providers) if rates and endpoint in draw.caps else ()
    if scopes:
        book.rates.give_back(endpoint, scopes, rate_second(draw.wall))


def unless_gone(
    book: QuotaBook, draw: Draw, decision: Decision, waited: StillWaited, rates: bool = True
) -> Decision:
    """The decision, or the MTA default when its client stopped waiting meanwhile: the
    mail leaves by the default route, so what the route counted is given back.
    ``rates``: False for a local decision, whose rate slot came from a lease under
    another name (the window then holds one entry too many: a cap ends early, never
    over)."""
    if decision.outcome != "route" or decision.endpoint is None:
        return decision
    try:
        why = waited()
    except Exception:  # a bug in the check: answer the route it counted, as before the check
        log.exception("checking whether the client still waits failed")
        return decision
    if not why:
        return decision
    give_back(book, draw, decision.endpoint, rates)
    return Decision(
        outcome="default",
        reason=f"not routed, decided too late: {why}",
        pool=decision.pool,
        rule=decision.rule,
        degraded=decision.degraded,
        r=decision.r,
    )
