"""The feedback daemon's Redis writes: outcome counts, rule hits, the log position.

A batch is applied in one MULTI/EXEC together with the follower's position and
the batch's mark, so a crash either applies the batch and moves the position, or
does neither: a restart neither re-counts nor skips, and a retry whose first
attempt ran (its reply lost) finds the mark. Scripts go as EVAL (Redis caches them by
digest), so a restarted or failed-over Redis never answers NOSCRIPT mid-batch.

The transaction runs under WATCH of the instance's owner key (``watching_owner``):
a daemon that claims the instance while a batch is between its owner check and its
EXEC starts from the position saved before the batch, and counts its lines itself;
the claim writes the key, so this batch's EXEC does nothing (``OwnerChanged``).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import redis
from redis.client import Pipeline

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.config.feedback import ResponseRuleConfig
from smtp_balancer.state import arm_book, scripts
from smtp_balancer.state.keys import (
    DAY_TTL_S,
    EXPSTATS_TTL_S,
    TENANT_TTL_S,
    KeySchema,
)
from smtp_balancer.state.values import text_of

# per-tenant hours are kept at least this long: `status` shows the last 24 of them
REASON_QUOTE = 160  # characters of the remote reply quoted in a suspension reason
CODES = {0: "counting", 1: "acted", 2: "in_force", 3: "skipped"}


HIT_LUA = scripts.HIT.text


class OwnerChanged(Exception):
    """A watched batch's EXEC: the owner key changed since the owner check (another
    daemon claimed the instance), so nothing was applied; or, as redis-py reports it
    too, the connection broke while watched, and the EXEC may have run (its mark says)."""


class Rule(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def config(self) -> ResponseRuleConfig: ...


class Hit(Protocol):
    """A log line a response rule matched (feedback/processor.py's)."""

    @property
    def rule(self) -> Rule: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def response(self) -> str: ...
    @property
    def uid(self) -> str: ...


class Batch(Protocol):
    """What a batch of log lines adds up to (feedback/processor.py's)."""

    @property
    def outcomes(self) -> Mapping[tuple[str, str, str, str], int]: ...
    @property
    def tenant_outcomes(self) -> Mapping[tuple[str, str, str], int]: ...
    @property
    def hits(self) -> Sequence[Hit]: ...
    @property
    def arm_outcomes(self) -> Mapping[tuple[str, str, str], int]: ...
    @property
    def arm_records(self) -> Mapping[str, str]: ...
    @property
    def uid(self) -> str: ...


@dataclass(frozen=True)
class HitResult:
    hit: Hit
    outcome: str  # counting | acted | in_force | skipped
    seconds: int
    strike: int


def reason_for(hit: Hit) -> str:
    quoted = " ".join(hit.response.split())[:REASON_QUOTE]
    return f'rule {hit.rule.name}: {hit.endpoint} {hit.status} by {hit.provider}: "{quoted}"'


class FeedbackStore:
    def __init__(
        self, client: redis.Redis, keys: KeySchema, instance: str, retention_s: int, clock: Clock = SYSTEM
    ) -> None:
        self.r = client
        self.keys = keys
        self.clock = clock  # which UTC day's book an inherited arm record goes in
        self.instance = instance
        self.retention_s = retention_s
        # a mark names one batch of this run: a batch id alone repeats after a restart
        # (a rotated file's batches are numbered per run)
        self.run = secrets.token_hex(8)

    def load_position(self) -> str | None:
        """The saved position of the log follower, as it encoded it."""
        return text_of(self.r.get(self.keys.feedback_position(self.instance)))

    @contextmanager
    def watching_owner(self) -> Iterator[Pipeline | None]:
        """One batch's connection, with WATCH on the instance's owner key: read the owner
        through it (``load_position_and_owner``), then ``apply`` the batch through it.
        None when the Redis user may not WATCH (an ACL line older than this check): the
        batch then goes unwatched, as before it, rather than not at all."""
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.keys.feedback_owner(self.instance))
            except redis.exceptions.NoPermissionError:
                yield None
                return
            yield pipe

    def load_position_and_owner(self, watched: Pipeline | None = None) -> tuple[str | None, str | None]:
        """The saved position and the instance's owner (``instance_owner.py``), in one
        round trip; a value that is not a string reads as None."""
        position, owner = (self.r if watched is None else watched).mget(
            self.keys.feedback_position(self.instance), self.keys.feedback_owner(self.instance)
        )
        return text_of(position), text_of(owner)

    def mark(self, batch: Batch) -> str:
        return f"{self.run} {batch.uid}"

    def applied(self, batch: Batch) -> bool:
        """Whether this batch's transaction ran (the last mark is its own): a retry after
        a lost reply (a failover cut the connection after EXEC) must not apply it twice."""
        try:
            raw = self.r.get(self.keys.feedback_batch(self.instance))
        except redis.ResponseError:  # not a string (hand-made): the transaction's SET would have made it one
            return False
        return text_of(raw) == self.mark(batch)  # a hand-edited value is not this batch's mark

    def apply(self, batch: Batch, position: str, watched: Pipeline | None = None) -> list[HitResult]:
        """Apply ``batch`` and save the follower's ``position`` (encoded) with it; through
        ``watched`` (``watching_owner``), only while the owner key is as it was read.
        OwnerChanged: it was not, and nothing was applied (or the connection broke)."""
        if watched is None:
            pipe = self.r.pipeline(transaction=True)
        else:
            pipe = watched
            pipe.multi()
        buckets: Counter[tuple[str, str, str]] = Counter()
        for (ep, provider, minute, status), n in batch.outcomes.items():
            key = self.keys.outcomes(ep, provider, minute)
            pipe.hincrby(key, status, n)
            buckets[(ep, provider, minute)] += 1
        for ep, provider, minute in buckets:
            pipe.expire(self.keys.outcomes(ep, provider, minute), self.retention_s)
        for hit in batch.hits:
            rule = hit.rule.config
            pipe.eval(
                HIT_LUA,
                1,
                self.keys.hits(rule.name, hit.endpoint, hit.provider),
                self.keys.base,
                rule.name,
                hit.endpoint,
                hit.provider,
                hit.uid,
                rule.trigger.count,
                rule.trigger.period,
                rule.action,
                rule.duration,
                rule.growth,
                rule.window,
                rule.max_duration,
                rule.factor,
                reason_for(hit),
            )
        tenant_keys = set()
        for (tenant, hour, status), n in batch.tenant_outcomes.items():
            key = self.keys.tenant_outcomes(tenant, hour)
            pipe.hincrby(key, status, n)
            tenant_keys.add(key)
        for key in tenant_keys:
            pipe.expire(key, max(self.retention_s, TENANT_TTL_S))
        # per endpoint and UTC day, for warm-up hold_on rules (after the hits: their
        # replies are read by position)
        daily: Counter[tuple[str, str, str]] = Counter()
        for (ep, _, minute, status), n in batch.outcomes.items():
            daily[(ep, minute[:8], status)] += n
        for (ep, day, status), n in daily.items():
            pipe.hincrby(self.keys.daily(ep, day), status, n)
        for ep, day in {(ep, day) for ep, day, _ in daily}:
            pipe.expire(self.keys.daily(ep, day), DAY_TTL_S)
        for (experiment, arm, name), n in batch.arm_outcomes.items():
            pipe.hincrby(self.keys.expstats(experiment, arm), name, n)
        for experiment, arm in {(x, a) for x, a, _ in batch.arm_outcomes}:
            pipe.expire(self.keys.expstats(experiment, arm), EXPSTATS_TTL_S)
        if batch.arm_records:
            self._write_arms(pipe, batch.arm_records)
        pipe.set(self.keys.feedback_position(self.instance), position)
        pipe.set(self.keys.feedback_batch(self.instance), self.mark(batch))
        try:
            replies = pipe.execute()
        except redis.WatchError as exc:
            raise OwnerChanged from exc
        results = []
        for hit, reply in zip(batch.hits, replies[len(batch.outcomes) + len(buckets) :], strict=False):
            code, seconds, strike = (int(x) for x in reply)
            results.append(HitResult(hit, CODES.get(code, "unknown"), seconds, strike))
        return results

    def add_arm_outcomes(
        self, counts: Counter[tuple[str, str, str]], records: Mapping[str, str] | None = None
    ) -> None:
        """Outcomes counted late, and arm records inherited late (``records``: queue id ->
        value), in one transaction."""
        if not counts and not records:
            return
        pipe = self.r.pipeline(transaction=True)
        if records:
            self._write_arms(pipe, records)
        for (experiment, arm, name), n in counts.items():
            pipe.hincrby(self.keys.expstats(experiment, arm), name, n)
        for experiment, arm in {(x, a) for x, a, _ in counts}:
            pipe.expire(self.keys.expstats(experiment, arm), EXPSTATS_TTL_S)
        pipe.execute()

    def _write_arms(self, pipe: Pipeline, records: Mapping[str, str]) -> None:
        keys, args = arm_book.write_call(self.keys, self.clock.wall(), list(records.items()))
        pipe.eval(scripts.ARMS.text, len(keys), *keys, *args)
