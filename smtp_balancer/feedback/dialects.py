"""The two log dialects the feedback daemon reads, chosen once (feedback.log_format):
Postfix's mail log and Exim's main log. Each says which lines can be delivery
results, parses them, and reads a message's sender (for tenants) and a requeued
message's old queue id (Postfix's pickup only). Sans I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from smtp_balancer.decision.providers import ProviderTable
from smtp_balancer.feedback.delivery_log import (
    REQUEUED_MARK,
    Delivery,
    parse_line,
    parse_requeue,
    parse_sender,
)
from smtp_balancer.feedback.exim_log import MARKERS as EXIM_MARKERS
from smtp_balancer.feedback.exim_log import parse_exim_arrival, parse_exim_line


@dataclass(frozen=True)
class PostfixDialect:
    providers: ProviderTable
    arrival_marker: str = " from=<"  # qmgr's line: the envelope sender

    def maybe_delivery(self, line: str) -> bool:
        """A cheap pre-filter: most lines of a busy log are not delivery results."""
        return "status=" in line

    def parse(self, line: str) -> Delivery | None:
        return parse_line(line, self.providers)

    def arrival(self, line: str) -> tuple[str, str] | None:
        return parse_sender(line)

    def requeued(self, line: str) -> tuple[str, str] | None:
        """(new queue id, old one) from pickup's ``orig_id=`` line."""
        return parse_requeue(line) if REQUEUED_MARK in line else None


@dataclass(frozen=True)
class EximDialect:
    providers: ProviderTable
    transports: Mapping[str, str]  # transport name -> endpoint
    arrival_marker: str = " <= "

    def maybe_delivery(self, line: str) -> bool:
        return any(marker in line for marker in EXIM_MARKERS)

    def parse(self, line: str) -> Delivery | None:
        return parse_exim_line(line, self.providers, self.transports)

    def arrival(self, line: str) -> tuple[str, str] | None:
        return parse_exim_arrival(line)

    def requeued(self, line: str) -> tuple[str, str] | None:
        return None  # Exim keeps a message's id when it is moved


LogDialect = PostfixDialect | EximDialect


def dialect_for(providers: ProviderTable, exim_transports: Mapping[str, str] | None = None) -> LogDialect:
    """Postfix's log, or with ``exim_transports`` (transport name -> endpoint) Exim's main log."""
    return PostfixDialect(providers) if exim_transports is None else EximDialect(providers, exim_transports)
