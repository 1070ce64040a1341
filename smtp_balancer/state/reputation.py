"""Reputation records in Redis (``reputation import``), and the actions their rules
take: the same hit.lua the response rules act through, tripping at once.

A record is what one provider's export said about one of our IPs (so one
endpoint) or one sending domain, on one day. ``reputation.lua`` writes a record
only over one about the same day or an earlier one, so imports are idempotent
and an old export never overwrites a newer one; it returns what changed, and
only a changed record may act.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import redis

from smtp_balancer.state import scripts
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.scripts import LuaScript
from smtp_balancer.state.values import text_of

CODES = {0: "counting", 1: "acted", 2: "in_force", 3: "skipped"}  # hit.lua's replies


@dataclass(frozen=True)
class Record:
    """``endpoint`` set: about one of its IPs (``subject``); else about the sending
    domain ``domain`` (``subject``: a feedback loop id, or "")."""

    provider: str
    source: str
    signal: str
    day: date
    value: str
    endpoint: str = ""
    domain: str = ""
    subject: str = ""  # the IP, or a feedback loop id
    detail: str = ""

    @property
    def field(self) -> str:
        head = f"{self.source}:{self.signal}"
        return f"{head}:{self.subject}" if self.subject else head

    @property
    def text(self) -> str:
        return f"{self.day.isoformat()} {self.value} {self.detail}".rstrip()

    def key(self, keys: KeySchema) -> str:
        if self.endpoint:
            return keys.reputation(self.endpoint, self.provider)
        return keys.domain_reputation(self.domain, self.provider)


def recent(day: date, today: date, max_age_days: int) -> bool:
    """A record of ``day`` is recent enough to act on: at most ``max_age_days`` before
    ``today``. The one test of it: rules, warm-up holds, status, explain and metrics
    (a day after today, which the importer keeps up to tomorrow, counts)."""
    return (today - day).days <= max_age_days


@dataclass(frozen=True)
class HeldRecord:
    """A record as Redis holds it: about an endpoint's IP, or a sending domain."""

    scope: str  # endpoint | domain
    name: str  # the endpoint, or the domain
    provider: str
    source: str
    signal: str
    subject: str  # the IP, a feedback loop id, or ""
    day: str  # YYYY-MM-DD
    value: str
    detail: str


def held_record(scope: str, name: str, provider: str, field: str, text: str) -> HeldRecord | None:
    """A hash field and its text as written by ``write``; None when hand-made junk."""
    source, _, rest = field.partition(":")
    signal, _, subject = rest.partition(":")
    parts = text.split(" ", 2)
    if not signal or len(parts) < 2 or not _is_day(parts[0]):
        return None
    return HeldRecord(
        scope, name, provider, source, signal, subject, parts[0], parts[1], parts[2] if len(parts) > 2 else ""
    )


def _is_day(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


@dataclass(frozen=True)
class Acted:
    outcome: str  # acted | in_force | skipped (a drained endpoint)
    seconds: int
    strike: int


class ReputationStore:
    def __init__(self, client: redis.Redis, keys: KeySchema, retention_days: int) -> None:
        self.r = client
        self.keys = keys
        self.retention_days = retention_days
        self._shas: dict[str, str] = {}

    def write(self, records: Iterable[Record]) -> list[Record]:
        """Write the records; returns those that changed what Redis holds."""
        by_key: dict[str, dict[str, Record]] = defaultdict(dict)
        for record in records:
            held = by_key[record.key(self.keys)]
            if record.field not in held or held[record.field].day <= record.day:
                held[record.field] = record  # within one import, the newest day of a field
        changed: list[Record] = []
        sha = self._loaded(scripts.REPUTATION)
        items = list(by_key.items())
        for start in range(0, len(items), 200):
            chunk = items[start : start + 200]
            pipe = self.r.pipeline(transaction=False)
            for key, held in chunk:
                newest = max(r.day for r in held.values())
                args: list[str | int] = [self._expire_at(newest)]
                for record in held.values():
                    args += [record.field, record.day.isoformat(), record.text]
                pipe.evalsha(sha, 1, key, *args)
            for (_, held), fields in zip(chunk, pipe.execute(), strict=True):
                changed += [held[text_of(f)] for f in fields]
        return changed

    def _loaded(self, script: LuaScript) -> str:
        """Its sha, loaded once per store: EVALSHA and SCRIPT LOAD are what the CLI's ACL
        user has (not SCRIPT EXISTS, which redis-py's Script objects send)."""
        sha = self._shas.get(script.text)
        if sha is None:
            sha = self._shas[script.text] = text_of(self.r.script_load(script.text))
        return sha

    def _expire_at(self, day: date) -> int:
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1 + self.retention_days)
        return int(end.timestamp())

    def act(
        self, rule: str, endpoint: str, provider: str, action: str, seconds: int, factor: float, reason: str
    ) -> Acted:
        """The rule's action on (endpoint, provider), at once (hit.lua with a count of
        1, no growth): nothing when it is in force already or the endpoint is drained."""
        reply = self.r.evalsha(
            self._loaded(scripts.HIT),
            1,
            self.keys.hits(rule, endpoint, provider),
            self.keys.base,
            rule,
            endpoint,
            provider,
            "reputation",
            1,  # trigger count: the record is the trigger
            1,
            action,
            seconds,
            1,  # growth
            seconds,
            seconds,
            factor,
            reason,
        )
        code, left, strike = (int(x) for x in reply)  # type: ignore[union-attr]
        return Acted(CODES.get(code, "unknown"), left, strike)

    def endpoint_records(self) -> dict[tuple[str, str], dict[str, str]]:
        """(endpoint, provider) -> field -> record text, as held now."""
        return self._records(self.keys.reputation_pattern())

    def records_of(self, endpoint: str) -> list[HeldRecord]:
        """What the exports said of one endpoint's IPs, every provider, as held now."""
        # the pattern ends in the provider alone: endpoint names hold no ':' nor glob characters
        found = self._records(self.keys.reputation(endpoint, "*"))
        return [
            record
            for (_, provider), fields in found.items()
            for field, text in fields.items()
            if (record := held_record("endpoint", endpoint, provider, field, text)) is not None
        ]

    def domain_records(self) -> dict[tuple[str, str], dict[str, str]]:
        """(sending domain, provider) -> field -> record text, as held now."""
        return self._records(self.keys.domain_reputation_pattern())

    def in_force(self, today: date, max_age_days: int) -> list[HeldRecord]:
        """Every record about a day at most ``max_age_days`` before ``today`` (older ones
        are kept but act on nothing): endpoints' first, then domains', sorted."""
        out: list[HeldRecord] = []
        for scope, records in (("endpoint", self.endpoint_records()), ("domain", self.domain_records())):
            for (name, provider), fields in sorted(records.items()):
                for field, text in sorted(fields.items()):
                    record = held_record(scope, name, provider, field, text)
                    if record is not None and recent(date.fromisoformat(record.day), today, max_age_days):
                        out.append(record)
        return out

    def _records(self, pattern: str) -> dict[tuple[str, str], dict[str, str]]:
        out: dict[tuple[str, str], dict[str, str]] = {}
        prefix = pattern.rstrip("*")
        for raw in self.r.scan_iter(match=pattern, count=500):
            key = text_of(raw)
            name, _, provider = key[len(prefix) :].rpartition(":")
            try:
                fields = self.r.hgetall(key)
            except redis.ResponseError:  # not a hash (hand-made): not a record
                continue
            out[(name, provider)] = {text_of(k): text_of(v) for k, v in fields.items()}
        return out
