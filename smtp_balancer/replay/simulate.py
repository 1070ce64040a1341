"""Replay: messages decided again under a config, in simulated time, sans I/O.

The decision is the real one (``Planner.prepare`` and ``Planner.from_mirror``,
the same choice and eligibility as the daemons'), against a state kept in memory:
- warm-up and rate caps counted exactly, as select.lua counts them, with no
  leases (``SimQuota``);
- suspensions, throttles, slows and quarantines from the real response rules
  (``ResponseMatcher``), counted and acted on as hit.lua does (``HitBook``), on the
  replies ``ReplyModel`` gives each route.
Nothing is read from or written to Redis: weights set live, drains and actions in
force before the replayed period are not known to it.
"""

from __future__ import annotations

import functools
import heapq
import math
import random
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from smtp_balancer.clock import Clock
from smtp_balancer.config.model import BalancerConfig
from smtp_balancer.decision.facts import Decision
from smtp_balancer.decision.planner import Planner
from smtp_balancer.decision.providers import domain_of
from smtp_balancer.decision.quota import TOTAL, Counters
from smtp_balancer.decision.rates import RateCounter
from smtp_balancer.feedback.classify import BounceClassifier
from smtp_balancer.feedback.delivery_log import Delivery
from smtp_balancer.feedback.responses import ResponseMatcher, applied_rules
from smtp_balancer.replay.hits import ACTED, Fired, HitBook
from smtp_balancer.replay.inputs import Attempt, Message
from smtp_balancer.replay.replies import ReplyModel
from smtp_balancer.state.live import LiveState

RATE_WINDOW_S = 60.0
AWAIT_S = 5 * 86400.0  # a deferred recipient's retries are awaited this long (Postfix's
# maximal_queue_lifetime by default)
FIRST_MATCHES = 10  # the times of each response rule's first matches, kept for the report


class SimClock(Clock):
    """The simulated time: the message's or the reply's being replayed."""

    def __init__(self) -> None:
        self.at = 0.0

    def wall(self) -> float:
        return self.at

    def monotonic(self) -> float:
        return self.at


@dataclass(frozen=True)
class CapReached:
    endpoint: str
    scope: str  # total, a provider, or "<scope> rate"
    bucket: str  # the day or hour counted, or "" for a rate cap
    at: float
    message: int  # the replayed message's number (from 1) that first found it reached

    def __reduce__(self) -> tuple[type[CapReached], tuple[str, str, str, float, int]]:
        # a Run crosses processes (replay --jobs 2); compiled, a frozen class has no __dict__
        return (CapReached, (self.endpoint, self.scope, self.bucket, self.at, self.message))


class SimRates(RateCounter):
    """Rate-cap windows: the messages of the last 60 s per (endpoint, scope)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.windows: dict[tuple[str, str], deque[float]] = {}
        self.slow: dict[tuple[str, str], tuple[float, float]] = {}  # factor, until
        self.refused: list[tuple[str, str]] = []  # (endpoint, scope) refused by the last check

    def _used(self, endpoint: str, scope: str) -> int:
        window = self.windows.get((endpoint, scope))
        if window is None:
            return 0
        while window and window[0] <= self.clock.at - RATE_WINDOW_S:
            window.popleft()
        return len(window)

    def check(self, endpoint: str, scope: str, cap: int) -> str | None:
        factor, until = self.slow.get((endpoint, scope), (1.0, 0.0))
        if until > self.clock.at:
            cap = max(1, math.floor(cap * factor))
        used = self._used(endpoint, scope)
        if used + 1 > cap:
            self.refused.append((endpoint, scope))
            return f"{scope} rate cap {used}/{cap} a minute"
        return None

    def take(self, endpoint: str, scopes: tuple[str, ...]) -> bool:
        for scope in scopes:
            self.windows.setdefault((endpoint, scope), deque()).append(self.clock.at)
        return True


class SimQuota(Counters):
    """Warm-up counters kept exactly in memory: what ``QuotaBook`` leases, without leases."""

    def __init__(self, clock: SimClock) -> None:
        self.rates = SimRates(clock)
        # endpoint, field, day or hour -> count (a dict: a Counter's += costs more, compiled)
        self.counts: dict[tuple[str, str, str], int] = {}
        self.refused: list[tuple[str, str, str]] = []  # (endpoint, field, bucket) refused by checks

    def rate_counter(self) -> RateCounter:
        return self.rates

    def check(
        self,
        endpoint: str,
        n: int,
        day: str,
        hour: str,
        day_cap: int | None,
        hour_cap: int | None,
        field: str = TOTAL,
    ) -> str | None:
        for bucket, cap in ((day, day_cap), (hour, hour_cap)):
            if cap is not None and self.counts.get((endpoint, field, bucket), 0) + n > cap:
                self.refused.append((endpoint, field, bucket))
                return "cap reached" if field == TOTAL else f"{field} cap reached"
        return None

    def take(
        self,
        endpoint: str,
        n: int,
        providers: Iterable[tuple[str, int]],
        day: str,
        hour: str,
        leased: bool,
        leased_providers: frozenset[str] = frozenset(),
    ) -> bool:
        counts = self.counts
        for bucket in (day, hour):
            key = (endpoint, TOTAL, bucket)
            counts[key] = counts.get(key, 0) + n
            for provider, count in providers:
                key = (endpoint, provider, bucket)
                counts[key] = counts.get(key, 0) + count
        return True


@functools.lru_cache(maxsize=64)
def _hour_text(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%d %H:00")


def hour_of(at: float) -> str:
    """The UTC hour a time falls in, as the report shows it (strftime once an hour)."""
    return _hour_text(int(at // 3600))


@dataclass
class Run:
    """What one config did to the replayed messages."""

    name: str
    messages: int = 0
    volumes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # endpoint, provider, hour
    outcomes: Counter[str] = field(default_factory=Counter)  # route, default, defer, no_rule, inbound
    rules: Counter[str] = field(default_factory=Counter)  # routing rule -> messages
    caps: dict[tuple[str, str, str], CapReached] = field(default_factory=dict)
    fired: list[Fired] = field(default_factory=list)
    matched: Counter[str] = field(default_factory=Counter)  # response rule -> matches
    first_matched: dict[str, list[float]] = field(default_factory=dict)  # its first FIRST_MATCHES times
    replies: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # endpoint, provider, status
    unobserved: set[tuple[str, str]] = field(default_factory=set)


class Simulator:
    def __init__(
        self,
        config: BalancerConfig,
        replies: ReplyModel,
        name: str,
        seed: int = 1,
        foreign: Iterable[str] = (),
    ) -> None:
        """``foreign``: endpoints another fleet host owns, left out as that host's daemons leave them."""
        self.clock = SimClock()
        self.planner = Planner(config, random.Random(seed), self.clock)
        if foreign := list(foreign):
            self.planner.set_unplumbed(foreign)
        self.live = LiveState(taken_at=0.0)
        self.quota = SimQuota(self.clock)
        self.response_rules = applied_rules(config.feedback)
        self.matcher = ResponseMatcher(self.response_rules)
        self.classifier = BounceClassifier.from_config(config.feedback)
        self.hits = HitBook()
        self.replies = replies
        self.reply_rng = random.Random(seed)
        replies.listeners.append(self._read)
        self.run = Run(name)
        self._pending: list[tuple[float, int, Delivery]] = []  # replies still to come, by time
        self._seq = 0
        # messages on their actual route with a recipient still deferred: their retries,
        # when the log reaches them, are theirs too; (queue id, endpoint) -> recipient -> provider
        self._awaiting: dict[tuple[str, str], dict[str, str]] = {}
        self._awaiting_since: deque[tuple[float, tuple[str, str]]] = deque()

    def replay(self, messages: Iterable[Message]) -> Run:
        """Every message, in the order given (time order), then the replies still due."""
        for message in messages:
            self.step(message)
        return self.finish()

    def step(self, message: Message) -> Decision:
        """The replies due by the message's time, then its decision. The reply model must
        have read the log to ``AHEAD_S`` past the message."""
        self.replies.reach(message.at)
        self._replies_until(message.at)
        since = self._awaiting_since
        while since and since[0][0] < message.at - AWAIT_S:
            self._awaiting.pop(since.popleft()[1], None)
        return self.decide(message)

    def finish(self) -> Run:
        """The replies still due, once the whole log has been read."""
        self._replies_until(math.inf)
        self.run.unobserved -= self.replies.seen_routes
        return self.run

    def decide(self, message: Message) -> Decision:
        run, clock = self.run, self.clock
        clock.at = message.at
        run.messages += 1
        self.quota.refused.clear()
        self.quota.rates.refused.clear()
        draw = self.planner.prepare(message.facts)
        if message.r is not None and not isinstance(draw, Decision):
            draw.r = message.r  # the message's own draw: a difference is the config's doing
        if isinstance(draw, Decision):
            decision = draw
        else:
            settled = self.planner.from_mirror(draw, self.live, self.quota)
            assert settled is not None  # SimQuota never needs Redis
            decision = settled
            self._note_caps(run.messages, draw.buckets)
        run.outcomes[decision.outcome] += 1
        run.rules[decision.rule or "-"] += 1
        if decision.outcome != "route" or decision.endpoint is None or isinstance(draw, Decision):
            return decision
        hour = hour_of(message.at)
        for provider, count in draw.provider_counts:
            run.volumes[(decision.endpoint, provider, hour)] += count
            self._sent(message, decision.endpoint, provider)
        return decision

    def _note_caps(self, number: int, buckets: tuple[str, str]) -> None:
        for endpoint, scope, bucket in self.quota.refused:
            self.run.caps.setdefault(
                (endpoint, scope, bucket), CapReached(endpoint, scope, bucket, self.clock.at, number)
            )
        for endpoint, scope in self.quota.rates.refused:
            key = (endpoint, f"{scope} rate", "")
            self.run.caps.setdefault(key, CapReached(endpoint, key[1], "", self.clock.at, number))

    def _sent(self, message: Message, endpoint: str, provider: str) -> None:
        """The replies a message sent by (endpoint, provider) gets, queued by their time."""
        if endpoint == message.endpoint:
            own = [a for a in self.replies.own(message.queue_id, endpoint) if a.delivery.provider == provider]
            if own:
                deferred: dict[str, str] = {}
                for attempt in own:
                    d = attempt.delivery
                    self._queue(attempt.at, d)
                    if d.status == "deferred":
                        deferred[d.recipient] = provider
                    else:
                        deferred.pop(d.recipient, None)
                if deferred:
                    key = (message.queue_id, endpoint)
                    self._awaiting.setdefault(key, {}).update(deferred)
                    self._awaiting_since.append((message.at, key))
                return
        drawn, observed = self.replies.drawn(endpoint, provider, self.reply_rng)
        if not observed:
            self.run.unobserved.add((endpoint, provider))
        if drawn is None:
            self.run.replies[(endpoint, provider, "sent")] += 1
            return
        self._queue(message.at, drawn.delivery.but(endpoint=endpoint, queue_id=message.queue_id))

    def _read(self, attempt: Attempt) -> None:
        """A reply the log shows now: a retry of a recipient this replay awaits is its own."""
        d = attempt.delivery
        waiting = self._awaiting.get((d.queue_id, d.endpoint))
        if waiting is None or d.recipient not in waiting:
            return
        self._queue(attempt.at, d)
        if d.status != "deferred":
            del waiting[d.recipient]
            if not waiting:
                del self._awaiting[(d.queue_id, d.endpoint)]

    def _queue(self, at: float, delivery: Delivery) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (at, self._seq, delivery))

    def _replies_until(self, until: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= until:
            at, _, d = heapq.heappop(pending)
            self.clock.at = max(self.clock.at, at)
            self._reply(d)

    def _reply(self, d: Delivery) -> None:
        run = self.run
        run.replies[(d.endpoint, d.provider, d.status)] += 1
        if d.status == "sent" and not self.matcher.has_sent_rules:
            return
        if d.status != "sent":
            d = d.but(bounce_class=self.classifier.classify(d.status, d.dsn, d.response))
        rule = self.matcher.match(d)
        if rule is None:
            return
        run.matched[rule.name] += 1
        times = run.first_matched.setdefault(rule.name, [])
        if len(times) < FIRST_MATCHES:
            times.append(self.clock.at)
        answer, fired = self.hits.hit(rule.config, d.endpoint, d.provider, self.clock.at)
        if answer == ACTED and fired is not None:
            run.fired.append(fired)
            self._apply(fired)

    def _apply(self, fired: Fired) -> None:
        until, key = fired.at + fired.seconds, (fired.endpoint, fired.provider)
        if fired.action in ("suspend_provider", "suspend_all"):
            self.live.suspended_until[key] = until
        elif fired.action == "throttle":
            self.live.throttles[key] = (fired.factor, until)
        elif fired.action == "slow":
            self.quota.rates.slow[key] = (fired.factor, until)
        else:  # quarantine: out of service until then (a wall time, as the mirror holds it)
            self.live.out_of_service[fired.endpoint] = until


def count_actual(run: Run, message: Message, planner: Planner) -> None:
    """What the log says happened to one message: its recipients by the route it got."""
    run.messages += 1
    run.outcomes[message.outcome or "?"] += 1
    run.rules[message.rule or "-"] += 1
    if message.outcome != "route" or not message.endpoint:
        return
    domains = [domain_of(r) for r in message.facts.recipients]
    for provider, count in planner.providers.for_domains(domains).items():
        run.volumes[(message.endpoint, provider, hour_of(message.at))] += count


def actual_volumes(messages: Iterable[Message], planner: Planner) -> Run:
    """What the log says happened, as a Run."""
    run = Run("actual")
    for message in messages:
        count_actual(run, message, planner)
    return run
