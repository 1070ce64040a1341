"""Log lines -> what the feedback daemon must do about them. Sans I/O.

A batch of lines becomes outcome counts per (endpoint, provider, minute,
status), the response-rule matches to count, and the deliveries for metrics.
Only endpoints named in the config reach Redis: Postfix's default transport and
other transports are counted in metrics alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from smtp_balancer.clock import SYSTEM
from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.feedback.classify import BounceClassifier, builtin_classes
from smtp_balancer.feedback.delivery_log import (
    BIND_ERROR,
    Delivery,
    LogLineError,
    bind_error_endpoint,
)
from smtp_balancer.feedback.dialects import LogDialect, dialect_for
from smtp_balancer.feedback.responses import CompiledRule, ResponseMatcher
from smtp_balancer.feedback.tenants import SenderBook
from smtp_balancer.state.keys import hour_bucket, minute_bucket

# extra fields of the minute outcome hashes, read by adaptive factors
BLOCK_CLASS = "policy_block"
BLOCKED = "blocked"  # deferrals and bounces of class policy_block
LATENCY_MS = "latency_ms"  # summed over delivered messages (Postfix's delays c + d)


@dataclass(frozen=True)
class Hit:
    rule: CompiledRule
    endpoint: str
    provider: str
    status: str
    response: str
    uid: str  # unique per log line, so a hit counts once in the rule's window


@dataclass
class Batch:
    outcomes: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    # (tenant, hour, status) of deliveries through our endpoints, when tenants are configured
    tenant_outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    hits: list[Hit] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    # endpoint -> Postfix's "smtp_connect_addr: bind <addr>: Cannot assign requested
    # address" warnings: its mail left from the host's default address instead
    bind_errors: Counter[str] = field(default_factory=Counter)
    # (experiment, arm, field) -> count: outcomes of messages in an experiment's arm
    arm_outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # (new queue id, old one) of messages the requeue daemon moved (Postfix's pickup
    # logs orig_id=): the new id inherits the old one's arm record
    requeued: list[tuple[str, str]] = field(default_factory=list)
    # new queue id -> the arm record value it inherits, written with the batch
    arm_records: dict[str, str] = field(default_factory=dict)
    lines: int = 0
    uid: str = ""  # the batch's own id: its hits' uids start with it
    ignored: int = 0  # well-formed, but not a delivery result
    garbage: list[str] = field(default_factory=list)  # why each unparsable line failed

    @property
    def pairs(self) -> set[tuple[str, str]]:
        return {(ep, provider) for ep, provider, _, _ in self.outcomes}


class Processor:
    def __init__(
        self,
        providers: ProviderTable,
        matcher: ResponseMatcher,
        endpoints: set[str],
        exim_transports: Mapping[str, str] | None = None,
        classifier: BounceClassifier | None = None,
        tenants: TenantTable | None = None,
    ) -> None:
        """``exim_transports`` (transport name -> endpoint): read Exim's main log
        instead of Postfix's."""
        self.providers = providers
        self.matcher = matcher
        self.endpoints = endpoints
        self.dialect: LogDialect = dialect_for(providers, exim_transports)
        self.classifier = classifier or BounceClassifier(builtin_classes())
        self.tenants = tenants or TenantTable(())
        self.senders = SenderBook()
        # the arrival line's marker: only read when some tenant is configured
        self._arrival = self.dialect.arrival_marker if self.tenants else None

    def note_arrival(self, line: str) -> bool:
        found = self.dialect.arrival(line)
        if found is not None:
            self.senders.note(found[0], self.tenants.of(found[1]))
        return found is not None

    def process(self, lines: list[str], uid_prefix: str, now: float | None = None) -> Batch:
        batch = Batch(lines=len(lines), uid=uid_prefix)
        now = SYSTEM.wall() if now is None else now
        minute, hour = minute_bucket(now), hour_bucket(datetime.fromtimestamp(now, UTC))
        dialect = self.dialect
        for i, line in enumerate(lines):
            if (link := dialect.requeued(line)) is not None:
                batch.requeued.append(link)
            if self._arrival is not None and self._arrival in line and self.note_arrival(line):
                batch.ignored += 1
                continue
            if not dialect.maybe_delivery(line):
                if BIND_ERROR in line and (endpoint := bind_error_endpoint(line)) is not None:
                    batch.bind_errors[endpoint] += 1
                batch.ignored += 1
                continue
            try:
                d = dialect.parse(line)
            except LogLineError as exc:
                batch.garbage.append(str(exc))
                continue
            if d is None:
                batch.ignored += 1
                continue
            if d.status != "sent":
                d = d.but(bounce_class=self.classifier.classify(d.status, d.dsn, d.response))
            if self.tenants:
                tenant = (
                    self.tenants.of(d.sender) if d.sender is not None else self.senders.tenant(d.queue_id)
                )
                d = d.but(tenant=tenant)
            batch.deliveries.append(d)
            if d.endpoint not in self.endpoints:
                continue
            batch.outcomes[(d.endpoint, d.provider, minute, d.status)] += 1
            if d.bounce_class == BLOCK_CLASS:
                batch.outcomes[(d.endpoint, d.provider, minute, BLOCKED)] += 1
            elif d.status == "sent" and d.transfer_s is not None:
                # connection setup and transmission: how long the receiver took with us
                batch.outcomes[(d.endpoint, d.provider, minute, LATENCY_MS)] += int(1000 * d.transfer_s)
            if self.tenants:
                batch.tenant_outcomes[(d.tenant, hour, d.status)] += 1
            if d.status != "sent" or self.matcher.has_sent_rules:
                rule = self.matcher.match(d)
                if rule is not None:
                    batch.hits.append(
                        Hit(rule, d.endpoint, d.provider, d.status, d.response, f"{uid_prefix}:{i}")
                    )
        return batch
