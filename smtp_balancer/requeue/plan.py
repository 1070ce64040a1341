"""Which deferred messages to move, and why: sans-I/O, state and messages in, moves out.

A message is moved when the endpoint its FILTER names is ineligible for the
provider of one of its pending recipients, and the move is wanted:
- an operator asked (`drain/suspend --requeue`: a ``requeue`` marker), or
- the feedback rule that suspended or quarantined it moves queued mail
  (``requeue``, on by default for rules matching deferrals), or
- a health check quarantined it (``requeue.health_quarantines``), or
- the endpoint has no transport in master.cf (unplumbed): its mail could never leave.
Mail bound to transports that are not our endpoints (an amavis FILTER, say) is
never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from smtp_balancer.config.feedback import FeedbackConfig, ResponseRuleConfig
from smtp_balancer.decision.providers import ProviderTable, domain_of
from smtp_balancer.feedback.checks import DNSBL_BY, PROBE_BY
from smtp_balancer.requeue.queuefile import QueuedMessage
from smtp_balancer.state.keys import ALL_PROVIDERS
from smtp_balancer.state.live import returns_at
from smtp_balancer.state.values import parse_state

HEALTH_BY = (DNSBL_BY, PROBE_BY)


@dataclass(frozen=True)
class EndpointState:
    """What Redis says about one endpoint, as far as moving its mail goes."""

    admin: str = "active"  # active | drained | quarantined (an expired quarantine: active)
    admin_by: str = ""
    admin_reason: str = ""
    suspensions: Mapping[str, str] = field(default_factory=dict)  # provider or "all" -> reason
    requested: frozenset[str] = frozenset()  # providers (or "all") an operator asked to move
    plumbed: bool = True
    bind_missing: str = ""  # its bind address, when that is not on this host


def endpoint_state(
    fields: Mapping[str | None, str | None],
    suspensions: Mapping[str, str],
    requested: Iterable[str],
    now: float,
    plumbed: bool = True,
    bind_missing: str = "",
) -> EndpointState:
    """An EndpointState from the state hash's fields (HGETALL, decoded), the endpoint's
    suspension reasons and operator requests by provider, at wall-clock ``now``."""
    # the deciders' reading: junk state is active, a quarantine past its `until` lifted
    returns = returns_at(fields.get("state"), fields.get("until"))
    admin = "active" if returns is None or returns <= now else parse_state(fields.get("state")) or "active"
    asked = set(requested) | ({ALL_PROVIDERS} if fields.get("requeue") == "1" else set())
    return EndpointState(
        admin=admin,
        admin_by=fields.get("by") or "",
        admin_reason=fields.get("reason") or "",
        suspensions=dict(suspensions),
        requested=frozenset(asked),
        plumbed=plumbed,
        bind_missing=bind_missing,
    )


@dataclass(frozen=True)
class AutomaticRules:
    """Which automatic actions move queued mail, by the rule named in their reason."""

    response: frozenset[str]
    rate: frozenset[str]
    health_quarantines: bool

    @classmethod
    def from_config(
        cls, feedback: FeedbackConfig, builtin: Iterable[ResponseRuleConfig], health_quarantines: bool
    ) -> AutomaticRules:
        response = {r.name for r in feedback.response_rules if r.moves_queued_mail}
        if feedback.builtin_rules:
            response |= {r.name for r in builtin if r.moves_queued_mail}
        rate = {r.name for r in feedback.rate_rules if r.moves_queued_mail}
        return cls(frozenset(response), frozenset(rate), health_quarantines)

    def suspension_moves(self, reason: str) -> bool:
        # reasons are written as "rule NAME: ..." (hit.lua) and "rate rule NAME: ..." (rate.lua)
        for head, names in (("rule ", self.response), ("rate rule ", self.rate)):
            if reason.startswith(head):
                name = reason[len(head) :].partition(":")[0]
                return name in names
        return False

    def quarantine_moves(self, by: str) -> bool:
        if by.startswith("feedback:"):
            return by[len("feedback:") :] in self.response
        return self.health_quarantines and by in HEALTH_BY


def move_reason(state: EndpointState, provider: str, rules: AutomaticRules) -> str | None:
    """Why mail for ``provider`` bound to this endpoint should move; None: it stays."""
    if not state.plumbed:
        return "unplumbed: no such transport in master.cf"
    if state.bind_missing:
        return f"unplumbed: bind address {state.bind_missing} is not on this host"
    asked = provider in state.requested or ALL_PROVIDERS in state.requested
    if state.admin == "drained" and asked:
        return f"drained: {state.admin_reason}".rstrip(": ")
    if state.admin == "quarantined" and (asked or rules.quarantine_moves(state.admin_by)):
        return f"quarantined: {state.admin_reason}".rstrip(": ")
    for scope in (provider, ALL_PROVIDERS):
        reason = state.suspensions.get(scope)
        if reason is not None and (asked or rules.suspension_moves(reason)):
            return f"suspended for {scope}: {reason}"
    return None


@dataclass(frozen=True)
class Move:
    queue_id: str
    endpoint: str  # the route it was bound to
    reason: str
    # pending recipients that must leave by another route, by provider
    moving: Mapping[str, tuple[str, ...]]
    # pending recipients whose provider may stay on the endpoint: pinned to it
    staying: tuple[str, ...]
    message: QueuedMessage


def bound_endpoint(message: QueuedMessage, endpoints: Mapping[str, str]) -> str | None:
    """The endpoint whose FILTER the message carries: transport and nexthop both ours."""
    if not message.content_filter:
        return None
    name = message.transport
    return name if endpoints.get(name) == message.content_filter else None


def plan_moves(
    messages: Iterable[QueuedMessage],
    endpoints: Mapping[str, str],
    states: Mapping[str, EndpointState],
    providers: ProviderTable,
    rules: AutomaticRules,
    limit: int,
) -> list[Move]:
    """Up to ``limit`` moves, oldest messages first. ``endpoints``: name -> the FILTER
    target our routes write (``out2:`` or ``out2:[relay]:25``)."""
    moves: list[Move] = []
    for message in sorted(messages, key=lambda m: m.arrival):
        if len(moves) >= limit:
            break
        endpoint = bound_endpoint(message, endpoints)
        if endpoint is None or not message.pending:
            continue
        state = states.get(endpoint, EndpointState())
        by_provider: dict[str, list[str]] = {}
        for address in message.pending:
            by_provider.setdefault(providers.for_domain(domain_of(address)), []).append(address)
        moving: dict[str, tuple[str, ...]] = {}
        staying: list[str] = []
        reason = ""
        for provider, addresses in by_provider.items():
            why = move_reason(state, provider, rules)
            if why is None:
                staying += addresses
            else:
                moving[provider] = tuple(addresses)
                reason = reason or why
        if moving:
            moves.append(Move(message.queue_id, endpoint, reason, moving, tuple(staying), message))
    return moves


def bound_counts(messages: Iterable[QueuedMessage], endpoints: Mapping[str, str]) -> dict[str, int]:
    """Deferred messages per endpoint they are bound to (``status``)."""
    counts: dict[str, int] = {}
    for message in messages:
        endpoint = bound_endpoint(message, endpoints)
        if endpoint is not None:
            counts[endpoint] = counts.get(endpoint, 0) + 1
    return counts
