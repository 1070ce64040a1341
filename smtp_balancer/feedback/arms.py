"""Delivery outcomes per experiment arm: the deciders record each message's arm
under its queue id (``state/arm_book.py``); the feedback daemon looks the ids
of a batch up in one round and adds each delivery's outcome to its arm's hash
(``{sb}:expstats:<experiment>:<arm>``), in the batch's own transaction (or, for
one found only after its batch, on its own).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping

import redis

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.experiments.records import configured_record, counts_in_run, read_runs_since
from smtp_balancer.feedback.delivery_log import Delivery
from smtp_balancer.state.experiments import ExperimentStore
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import text_of

# upper bounds (seconds) of the latency buckets: connection setup and transmission
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


def latency_field(seconds: float) -> str:
    for upper in LATENCY_BUCKETS:
        if seconds <= upper:
            return f"lat:{upper:g}"
    return "lat:inf"


def outcome_fields(d: Delivery) -> list[str]:
    """The arm hash fields one delivery adds 1 to."""
    fields = [d.status]
    if d.status != "sent":
        fields.append(f"class:{d.bounce_class}")  # refusals: deferrals and bounces
        if d.status != "deferred":
            fields.append(f"bounced:{d.bounce_class}")
    elif d.transfer_s is not None:
        fields.append(latency_field(d.transfer_s))
    return fields


GRACE_S = 5.0  # how long a delivery waits for its message's arm record to appear
# a moved message waits longer: moves are few (requeued mail), and its record may be
# late by seconds (a decider's loop stalled on a loaded host, a failed round sent again)
MOVE_GRACE_S = 60.0
SINCE_REFRESH_S = 5.0  # how often the runs' starts (experiment start --reset) are read
RETRY_S = 1.0
MAX_PENDING = 200_000


class ArmAttribution:
    """Looks the arm of each delivery up by queue id, in one round per batch.

    The deciders write the records in batches (every 50 ms), so a fast delivery can
    reach the log before its record reaches Redis: a queue id without one is asked
    again with the next batches for ``GRACE_S``, then taken as not in an experiment.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        endpoints: set[str],
        arms: Collection[tuple[str, str]],
        clock: Clock = SYSTEM,
    ) -> None:
        self.r, self.keys, self.endpoints, self.clock = client, keys, endpoints, clock
        self.store = ExperimentStore(client, keys)
        self.arms = frozenset(arms)  # the configured (experiment, arm) pairs
        self.pending: dict[str, tuple[float, list[str]]] = {}  # queue id -> (first seen, fields)
        # moved messages whose old id had no record yet: new id -> (first seen, old id)
        self.pending_moves: dict[str, tuple[float, str]] = {}
        self._retry_due = 0.0
        self._moves_due = 0.0
        self._since: dict[str, float] = {}
        self._since_due = float("-inf")

    def runs_since(self) -> dict[str, float]:
        """experiment -> when its current run began (``start --reset``), read at most
        every SINCE_REFRESH_S: outcomes of messages decided before do not count."""
        now = self.clock.monotonic()
        if now >= self._since_due:
            self._since_due = now + SINCE_REFRESH_S
            self._since = read_runs_since(self.r, self.keys, {x for x, _ in self.arms})
        return self._since

    def inherit(self, requeued: list[tuple[str, str]]) -> dict[str, str]:
        """new queue id -> the arm record of the old one, for requeued messages: their
        later deliveries then count in the arm (one round, only for batches with some).

        A message can be moved within a second of its decision, before the decider's
        batch wrote its record: an old id without one is asked again, as ``collect``
        asks for a delivery's, for ``MOVE_GRACE_S``."""
        now = self.clock.monotonic()
        pairs = list(requeued)
        if self.pending_moves and now >= self._moves_due:
            self._moves_due = now + RETRY_S
            fresh = {new for new, _ in requeued}
            pairs += [(new, old) for new, (_, old) in self.pending_moves.items() if new not in fresh]
        if not pairs:
            return {}
        raws = self.store.arm_records([old for _, old in pairs], self.clock.wall())
        out: dict[str, str] = {}
        for (new, old), raw in zip(pairs, raws, strict=True):
            first, _ = self.pending_moves.pop(new, (now, old))
            if old in out:  # moved twice within this batch: its first new id is not in Redis yet
                out[new] = out[old]
            elif configured_record(raw, self.arms) is not None:
                out[new] = text_of(raw) or ""  # the same record: its decision time too
            elif raw is None and now - first < MOVE_GRACE_S:
                self.pending_moves[new] = (first, old)
        if self.pending_moves and self._moves_due <= now:
            self._moves_due = now + RETRY_S  # the first ask again: a second from now
        for new in list(self.pending_moves)[: max(0, len(self.pending_moves) - MAX_PENDING)]:
            del self.pending_moves[new]  # the oldest first
        return out

    def collect(
        self, deliveries: Iterable[Delivery], known: Mapping[str, str] | None = None
    ) -> Counter[tuple[str, str, str]]:
        """(experiment, arm, field) -> count, for these deliveries, and for those still
        pending when their retry is due (once a second: a busy log's non-experiment
        mail must not be asked for again at every batch). ``known``: arm records the
        batch itself writes (``inherit``)."""
        known = known or {}
        now = self.clock.monotonic()
        fresh: dict[str, list[str]] = {}
        for d in deliveries:
            if d.endpoint in self.endpoints and d.queue_id:
                fresh.setdefault(d.queue_id, []).extend(outcome_fields(d))
        ask = list(fresh)
        if self.pending and now >= self._retry_due:
            self._retry_due = now + RETRY_S
            ask += [q for q in self.pending if q not in fresh]
        out: Counter[tuple[str, str, str]] = Counter()
        if not ask:
            return out
        since = self.runs_since()
        for qid, raw in zip(ask, self.store.arm_records(ask, self.clock.wall()), strict=True):
            first, fields = self.pending.pop(qid, (now, []))
            fields += fresh.get(qid, [])
            record = configured_record(known.get(qid, raw), self.arms)
            if record is not None:
                if counts_in_run(record, since.get(record.experiment)):
                    for name in fields:
                        out[(record.experiment, record.arm, name)] += 1
            elif now - first < GRACE_S:
                self.pending[qid] = (first, fields)
        for qid in list(self.pending)[: max(0, len(self.pending) - MAX_PENDING)]:
            del self.pending[qid]  # the oldest first: a flood of mail outside experiments
        return out
