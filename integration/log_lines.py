"""Decision lines exactly as the daemons write them, for tests that read logs back."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from smtp_balancer.decision.facts import Decision, Facts
from smtp_balancer.observe.decision_log import log_decision
from smtp_balancer.observe.logs import LogFormat, StructuredFormatter


def decision_lines(
    decided: Iterable[tuple[Facts, Decision, float | None]], style: LogFormat = "logfmt"
) -> list[str]:
    """The policy daemon's line for each (facts, decision, epoch time or None: now)."""
    formatter = StructuredFormatter(style)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("smtp_balancer.decision")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    times = []
    try:
        for facts, decision, at in decided:
            log_decision("policyd", facts, decision, action="DUNNO")
            times.append(at)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    for record, at in zip(records, times, strict=True):
        if at is not None:
            record.created = at
    return [formatter.format(r) for r in records]
