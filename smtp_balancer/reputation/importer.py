"""``smtp-balancer reputation import``: export files read (bounded: a JSON file up to
MAX_JSON_BYTES, CSV a line at a time, a line up to MAX_LINE), recorded, and acted on.

Nothing in a file is fatal to the rest: what cannot be used is counted by why, and
a file that is not an export at all is an error naming it, while the other files
are still imported.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Literal

import redis

from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.config.reputation import ReputationRuleConfig
from smtp_balancer.decision.tenants import OTHER, TenantTable
from smtp_balancer.reputation.attribute import Attributor
from smtp_balancer.reputation.exports import (
    ExportError,
    Observation,
    Skipped,
    postmaster,
    postmaster_v1,
    postmaster_v2,
    snds_data,
    snds_status,
)
from smtp_balancer.reputation.rules import reason, tripped
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.reputation import Record, ReputationStore, recent
from smtp_balancer.state.tenant_holds import TenantHolds

Kind = Literal["postmaster-v1", "postmaster-v2", "snds-data", "snds-status"]
KINDS: tuple[Kind, ...] = ("postmaster-v1", "postmaster-v2", "snds-data", "snds-status")
MAX_JSON_BYTES = 64 << 20  # a year of a domain's trafficStats is well under a megabyte
MAX_LINE = 64 << 10
BATCH = 5_000  # records written at a time: memory stays bounded on a large CSV


@dataclass
class ImportResult:
    observations: int = 0
    records: int = 0
    changed: int = 0
    stale: int = 0  # changed records of a day too long ago to act
    skipped: Skipped = field(default_factory=Skipped)
    actions: list[dict[str, object]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)


def kind_of(head: str) -> Kind | Literal["postmaster"]:
    """What a file is, from its first bytes: JSON is Postmaster Tools (v1 or v2, told
    from its shape once read); a CSV row of 4 columns with Yes or No third is SNDS's
    IP status; any other CSV, SNDS data."""
    text = head.lstrip("\ufeff \t\r\n")
    if text[:1] in ("{", "["):
        return "postmaster"
    first = text.split("\n", 1)[0].split(",")
    if len(first) == 4 and first[2].strip().lower() in ("yes", "no"):
        return "snds-status"
    return "snds-data"


def bounded_lines(f: IO[str], skipped: Skipped) -> Iterator[str]:
    """The file's lines; one longer than MAX_LINE is read past, not held, and counted."""
    while True:
        line = f.readline(MAX_LINE)
        if not line:
            return
        if len(line) == MAX_LINE and not line.endswith("\n"):
            while (more := f.readline(MAX_LINE)) and not more.endswith("\n"):
                pass
            skipped.note(f"line longer than {MAX_LINE // 1024} KiB")
            continue
        yield line


def observations(path: Path, kind: Kind | None, today: date, result: ImportResult) -> Iterator[Observation]:
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        head = f.read(4096)
        f.seek(0)
        told = kind or kind_of(head)
        if told.startswith("postmaster"):
            size = path.stat().st_size
            if size > MAX_JSON_BYTES:
                raise ExportError(f"{size} bytes is too large for a Postmaster Tools export (at most 64 MiB)")
            text = f.read()
            if told == "postmaster-v1":
                seen = postmaster_v1(text, result.skipped)
            elif told == "postmaster-v2":
                seen = postmaster_v2(text, result.skipped, today)
            else:
                told, seen = postmaster(text, result.skipped, today)
            result.kinds[told] += 1
            yield from seen
            return
        result.kinds[told] += 1
        if told == "snds-status":
            yield from snds_status(bounded_lines(f, result.skipped), result.skipped, today)
        else:
            yield from snds_data(bounded_lines(f, result.skipped), result.skipped)


def import_files(
    paths: Iterable[Path], kind: Kind | None, config: BalancerConfig, client: redis.Redis, today: date
) -> ImportResult:
    result = ImportResult()
    settings = config.reputation
    keys = KeySchema(config.redis.prefix)
    actor = Actor(
        ReputationStore(client, keys, settings.retention_days),
        TenantHolds(client, keys),
        TenantTable(config.tenants),
        settings.active_rules,
        settings.max_age_days,
        today,
    )
    attributor = Attributor(config)
    for path in paths:
        try:
            batch: list[Record] = []
            for o in observations(path, kind, today, result):
                result.observations += 1
                if (o.day - today).days > 1:  # a day's slack: the providers' days are not all UTC
                    result.skipped.note("record about a day after tomorrow (a wrong clock or date)")
                    continue
                for record in attributor.records([o], result.skipped):
                    batch.append(record)
                    if len(batch) >= BATCH:
                        actor.write(batch, result)
                        batch = []
            actor.write(batch, result)
        except (OSError, ExportError, UnicodeError, json.JSONDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            result.errors.append(f"{path}: {why}")
    return result


@dataclass
class Actor:
    """Writes records, and runs the rules a changed, recent record trips: on its
    (endpoint, provider), or on the tenant its sending domain belongs to."""

    store: ReputationStore
    holds: TenantHolds
    tenants: TenantTable
    rules: list[ReputationRuleConfig]
    max_age_days: int
    today: date

    def write(self, batch: list[Record], result: ImportResult) -> None:
        result.records += len(batch)
        for record in self.store.write(batch):
            result.changed += 1
            if not recent(record.day, self.today, self.max_age_days):
                result.stale += 1
                continue
            rule = tripped(record, self.rules, self.today, self.max_age_days)
            if rule is None:
                continue
            why = reason(rule, record)
            if rule.per_domain:
                result.actions.append(self._on_tenant(rule, record, why))
                continue
            acted = self.store.act(
                rule.name, record.endpoint, rule.for_provider, rule.action, rule.duration, rule.factor, why
            )
            result.actions.append(
                {
                    "rule": rule.name,
                    "action": rule.action,
                    "endpoint": record.endpoint,
                    "provider": rule.for_provider,
                    "outcome": acted.outcome,
                    "seconds": acted.seconds,
                    "reason": why,
                }
            )

    def _on_tenant(self, rule: ReputationRuleConfig, record: Record, why: str) -> dict[str, object]:
        """warn: said, nothing done; hold_tenant: the tenant's new mail is held (as
        ``smtp-balancer tenant hold`` does); move_tenant: it goes to the rule's pool (as
        ``tenant move`` does); if the domain is one of ``tenants:``."""
        tenant = self.tenants.of(record.domain)
        action: dict[str, object] = {
            "rule": rule.name,
            "action": rule.action,
            "domain": record.domain,
            "tenant": tenant,
            "seconds": 0,
            "reason": why,
        }
        if rule.action == "warn":
            return {**action, "outcome": "warned"}
        if tenant == OTHER:
            return {**action, "outcome": "skipped", "reason": f"{why}; {record.domain} is none of tenants:"}
        if rule.action == "move_tenant" and rule.pool is not None:
            placed = self.holds.move(tenant, rule.pool, rule.duration, why, "reputation import")
            action["pool"] = rule.pool
        else:
            placed = self.holds.hold(tenant, rule.duration, why, "reputation import")
        return {**action, "outcome": "acted" if placed else "in_force", "seconds": rule.duration}
