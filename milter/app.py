"""The pymilter application: collect, classify, decide at end of message, add the route header.

libmilter runs one thread per connection; every thread hands its decision to
the one shared engine (ThreadedEngine), so no thread opens a Redis connection.
Postfix's ``milter_header_checks`` turns our header into ``FILTER <endpoint>:``;
it only sees headers a milter added, so a client's own copy cannot route.
Anything that goes wrong fails open: no header, Postfix's default transport.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import Milter
from smtp_balancer_milter import metrics

from smtp_balancer.config.services import FeedbackIdConfig, MilterConfig
from smtp_balancer.decision.classes import Classifier, MessageClasses
from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.decision.feedback_id import feedback_id
from smtp_balancer.decision.tenants import TenantTable
from smtp_balancer.engine import ThreadedEngine
from smtp_balancer.engine.holds import HoldReader
from smtp_balancer.observe.decision_log import log_decision
from smtp_balancer.state.values import parse_int

log = logging.getLogger("smtp_balancer.milter")


FEEDBACK_ID = "Feedback-ID"


@dataclass(frozen=True)
class MilterSettings:
    route_header: str
    info_header: str
    decision_timeout_s: float
    classes: MessageClasses
    feedback_id: FeedbackIdConfig = field(default_factory=FeedbackIdConfig)
    tenants: TenantTable = field(default_factory=lambda: TenantTable(()))

    @classmethod
    def from_config(cls, cfg: MilterConfig, tenants: Iterable[str] = ()) -> MilterSettings:
        return cls(
            route_header=cfg.route_header,
            info_header=cfg.info_header,
            decision_timeout_s=cfg.decision_timeout_ms / 1000,
            classes=MessageClasses.from_config(cfg),
            feedback_id=cfg.feedback_id,
            tenants=TenantTable(tenants),
        )

    @property
    def classifier(self) -> Classifier:
        return self.classes.classifier

    def is_trusted(self, client_ip: str, sasl_username: str) -> bool:
        return self.classes.is_trusted(client_ip, sasl_username)


def _size(params: tuple[str, ...]) -> int | None:
    for param in params:
        key, _, value = param.partition("=")
        if key.upper() == "SIZE" and (size := parse_int(value, 15)) is not None:
            return size
    return None


@dataclass
class Envelope:
    """What one message told the milter before end of message."""

    client_ip: str = ""
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    sasl_username: str = ""
    size: int | None = None


def facts_for(envelope: Envelope, message_class: str, queue_id: str) -> Facts:
    return Facts(
        sender=envelope.sender,
        recipients=tuple(envelope.recipients),
        sasl_username=envelope.sasl_username,
        client_address=envelope.client_ip,
        size=envelope.size,
        message_class=message_class,
        queue_id=queue_id,
    )


def info_header(decision: Decision, message_class: str, why: str) -> str:
    """The info header's value: the decision id (as in the decision log line) and why."""
    text = f"id={decision.decision_id}; pool={decision.pool}; rule={decision.rule}"
    if decision.arm:
        text += f"; experiment={decision.experiment}; arm={decision.arm}"
    return f"{text}; class={message_class} ({why})" + ("; degraded" if decision.degraded else "")


def milter_factory(
    engine: ThreadedEngine, settings: MilterSettings, holds: HoldReader | None = None
) -> Callable[[], EgressMilter]:
    """What libmilter calls for each connection: every instance shares the one engine
    and the one copy of the tenant holds."""
    return lambda: EgressMilter(engine, settings, holds)


class EgressMilter(Milter.Base):
    def __init__(
        self, engine: ThreadedEngine, settings: MilterSettings, holds: HoldReader | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.holds = holds
        self.client_ip = ""
        self._new_message()

    def _new_message(self) -> None:
        self.sender = ""
        self.recipients: list[str] = []
        self.headers: list[tuple[str, str]] = []
        self.route_headers = 0
        self.feedback_ids = 0  # the message's own Feedback-ID headers: removed when we stamp ours
        self.size: int | None = None
        self.sasl_username = ""

    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        # family AF_UNIX/unknown (sendmail via pickup) leaves client_ip empty: a local submission
        self.client_ip = hostaddr[0] if isinstance(hostaddr, tuple) and hostaddr else ""
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._new_message()
        self.sender = mailfrom.strip("<>")
        self.sasl_username = self.getsymval("{auth_authen}") or ""
        self.size = _size(params)
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to: str, *params: str) -> int:
        self.recipients.append(to.strip("<>"))
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        key = name.lower()
        if key == self.settings.route_header.lower():
            self.route_headers += 1
        elif key == "feedback-id":
            self.feedback_ids += 1
        elif key in self.settings.classifier.wanted:
            self.headers.append((name, value))
        return Milter.CONTINUE

    @Milter.nocallback
    def body(self, chunk: bytes) -> int:  # the body decides nothing: don't ship it to us
        return Milter.CONTINUE

    def eom(self) -> int:
        started = time.perf_counter()
        try:
            self._route()
        except Exception:  # fail open: no header, Postfix's default transport
            metrics.FAILURES.labels("internal_error").inc()
            log.exception(
                "milter failed for queue id %s; no route header added", self.getsymval("{i}") or "-"
            )
        finally:
            metrics.EOM_SECONDS.observe(time.perf_counter() - started)
        return Milter.ACCEPT

    def _route(self) -> None:
        settings = self.settings
        # a copy the client wrote never survives (index is 1-based per header name)
        for index in range(self.route_headers, 0, -1):
            self.chgheader(settings.route_header, index, "")
        if self.route_headers:
            metrics.SPOOFED.inc()
        trusted = settings.is_trusted(self.client_ip, self.sasl_username)
        message_class, why = settings.classifier.classify(self.headers, trusted)
        metrics.CLASSIFIED.labels(message_class).inc()
        envelope = Envelope(self.client_ip, self.sender, self.recipients, self.sasl_username, self.size)
        facts = facts_for(envelope, message_class, self.getsymval("{i}") or "")
        decision = self.engine.decide(facts, timeout_s=settings.decision_timeout_s)
        log_decision("milter", facts, decision, message_class=message_class)
        if settings.feedback_id.enabled:
            self._stamp_feedback_id(decision, message_class)
        held = self.holds.of(self.sender) if self.holds is not None else None
        if held is not None:  # Postfix's hold queue, the route header kept for its release
            metrics.HELD.labels(held).inc()
            self.quarantine(f"tenant {held} is held by smtp-balancer")
        if decision.outcome == "route" and decision.endpoint:
            self.addheader(settings.route_header, decision.endpoint)
            if settings.info_header:
                self.addheader(settings.info_header, info_header(decision, message_class, why))
        elif decision.degraded:
            metrics.FAILURES.labels("no_route_degraded").inc()

    def _stamp_feedback_id(self, decision: Decision, message_class: str) -> None:
        """Ours, and no other: a sender's own copy could file its complaints under another tenant."""
        for index in range(self.feedback_ids, 0, -1):
            self.chgheader(FEEDBACK_ID, index, "")
        stamp = self.settings.feedback_id
        tenant = self.settings.tenants.of(self.sender)
        self.addheader(
            FEEDBACK_ID, feedback_id(stamp.format, stamp.sender_id, decision, message_class, tenant)
        )
