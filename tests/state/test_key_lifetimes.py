"""30 days of a fleet's writes on real Redis, on the injected clock: every key family
that grows with time or traffic carries a TTL, and key count and memory level off.

20 endpoints (4 warming, with a Google cap of their own; 4 with rate caps), 8
providers, 10 tenants and 3 experiments. Each simulated hour the real engine decides
24 messages; the real feedback store applies their outcomes (tenants, arms, a moved
message's arm record), a complaint is counted and a pin written. Redis counts TTLs in
real time, which the injected clock does not move, so after each day the test expires
by itself what Redis would have expired by then: a key's expiry is its TTL read when
it was last (re)written, from that day."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import redis

from integration.configs import even_experiment
from smtp_balancer.clock import FixedClock
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.feedback.processor import Batch
from smtp_balancer.state.complaints import ComplaintCounts, ComplaintScope
from smtp_balancer.state.experiments import ExperimentStore
from smtp_balancer.state.feedback_store import FeedbackStore
from smtp_balancer.state.keys import KeySchema, hour_bucket, minute_bucket
from smtp_balancer.state.pins import Pin, PinStore
from tests.ready import started

START = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 30
PER_HOUR = 24
KEYS = KeySchema()
ENDPOINTS = [f"out{i:02d}" for i in range(1, 21)]
DOMAINS = {  # one per provider
    "gmail.com": "google",
    "outlook.com": "microsoft",
    "yahoo.com": "yahoo",
    "icloud.com": "apple",
    "gmx.de": "united-internet",
    "yandex.ru": "yandex",
    "mail.ru": "mailru",
    "comcast.net": "comcast",
}
TENANTS = [f"t{i}.test" for i in range(10)]
# the families whose size the configuration bounds, not time or traffic: no TTL needed
UNTIMED = re.compile(r"\{sb\}:(experiment:[^:]+|feedback:[^:]+:(position|batch)|fbl:totals)$")


def fleet_config() -> dict:
    warmup = {"start": START.date().isoformat(), "schedule": [5000], "providers": {"google": [400]}}
    endpoints = {}
    for i, name in enumerate(ENDPOINTS, 1):
        endpoints[name] = {"bind_address": f"127.0.1.{i}", "helo_name": f"{name}.test"}
        if i <= 4:
            endpoints[name]["warmup"] = warmup
        elif i <= 8:
            endpoints[name]["rate_caps"] = {"google": 600, "all": 3000}
    third = len(TENANTS) // 3
    return {
        "endpoints": endpoints,
        "pools": {"main": {"endpoints": [{"endpoint": e, "weight": 1} for e in ENDPOINTS]}},
        "rules": [
            {"name": "r1", "sender_domain": TENANTS[:third], "pool": "main"},
            {"name": "r2", "sender_domain": TENANTS[third : 2 * third], "pool": "main"},
            {"name": "r3", "pool": "main"},
        ],
        "tenants": TENANTS,
        "experiments": [even_experiment(f"x{r}", f"r{r}", {"a": "main", "b": "main"}) for r in (1, 2, 3)],
    }


class Expiry:
    """What Redis would have expired by the injected clock: per key, the injected time
    its TTL was last set from, that TTL, and the real time Redis will expire it at."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self.seen: dict[str, tuple[float, float, int]] = {}  # key -> (injected base, ttl s, PEXPIRETIME)
        self.untimed: set[str] = set()

    def after(self, now: float) -> None:
        """Note new and rewritten keys at ``now``, then expire the ones due."""
        for key in self.r.scan_iter(count=1000):
            at = self.r.pexpiretime(key)
            if at == -1:
                self.untimed.add(key)
                continue
            noted = self.seen.get(key)
            # a TTL set again moves Redis's expiry, an absolute time, later. Compared as
            # remaining TTLs instead, a rewrite looked like the same TTL counted down on a
            # fast run, and like a new one on a slow run: how many keys lived depended
            # on the machine's speed (a run on a loaded host failed on the rate windows)
            if at >= 0 and (noted is None or at > noted[2]):
                self.seen[key] = (now, self.r.pttl(key) / 1000, at)
        due = [k for k, (base, ttl, _) in self.seen.items() if base + ttl <= now]
        if due:
            self.r.delete(*due)
        for key in due:
            del self.seen[key]


def family(key: str) -> str:
    """A key's name with its variable parts dropped: `{sb}:count:*:day:*`."""
    parts = key.split(":")
    fixed = {"count", "day", "hour", "arms", "armdir", "ratesec", "outcomes", "daily", "tenant", "pin"}
    return ":".join(p if i <= 1 or p in fixed else "*" for i, p in enumerate(parts))


async def test_thirty_days_of_writes_level_off(make_config, rdb: redis.Redis) -> None:
    config = make_config(replace=fleet_config())
    clock = FixedClock(START)
    engine = Engine(config, clock)
    store = FeedbackStore(rdb, KEYS, "host1", config.feedback.rate_retention, clock)
    complaints = ComplaintCounts(rdb, KEYS, config.feedback.rate_retention, tenants=True)
    pins = PinStore(rdb, KEYS)
    for name in ("x1", "x2", "x3"):
        ExperimentStore(rdb, KEYS).start(name, ["a", "b"], clock.wall(), reset=False)
    expiry = Expiry(rdb)
    keys_by_day: list[int] = []
    memory_by_day: list[int] = []
    families: list[Counter[str]] = []
    n = 0
    try:
        await started(engine)
        for day in range(DAYS):
            for hour in range(24):
                batch = Batch(uid=f"d{day}h{hour}")
                for k in range(PER_HOUR):
                    at = START + timedelta(days=day, hours=hour, minutes=k * 60 // PER_HOUR)
                    clock.set(at)
                    domain = list(DOMAINS)[n % len(DOMAINS)]
                    tenant = TENANTS[n % len(TENANTS)]
                    qid = f"Q{n:010X}"
                    facts = Facts(sender=f"news@{tenant}", recipients=(f"u{n}@{domain}",), queue_id=qid)
                    d = await engine.decide(facts)
                    assert d.endpoint in ENDPOINTS, d
                    minute = minute_bucket(clock.wall())
                    status = "deferred" if n % 10 == 0 else "sent"
                    batch.outcomes[(d.endpoint, DOMAINS[domain], minute, status)] += 1
                    batch.tenant_outcomes[(tenant, hour_bucket(at), status)] += 1
                    if d.experiment is not None and d.arm is not None:
                        batch.arm_outcomes[(d.experiment, d.arm, status)] += 1
                        if k == 0:  # requeued: its new id inherits the record
                            batch.arm_records[f"R{n:010X}"] = f"{d.experiment} {d.arm} {int(clock.wall())}"
                    n += 1
                await engine.leases.round()
                store.apply(batch, f"pos {n}")
                scope = ComplaintScope(ENDPOINTS[hour % 20], "google", TENANTS[hour % 10])
                complaints.record("complaint", clock.wall(), scope, ("x3", "a"))
                pin = Pin(ENDPOINTS[hour % 20], "google", 1, "moved for the test")
                pins.write_pins([(f"p{n}@gmail.com", pin)], clock.wall(), config.requeue.pin_ttl)
            clock.set(START + timedelta(days=day + 1))
            await engine.leases.round()
            expiry.after(clock.wall())
            keys_by_day.append(rdb.dbsize())
            memory_by_day.append(rdb.info("memory")["used_memory"])
            families.append(Counter(family(k) for k in rdb.scan_iter(count=1000)))
    finally:
        await engine.aclose()

    # no TTL only where the configuration bounds the family
    assert sorted(k for k in expiry.untimed if not UNTIMED.match(k)) == []
    assert len(expiry.untimed) <= 3 + 2 + 1  # experiments, the feedback position and batch, fbl totals
    # level: the last ten days hold as many keys, and as much memory, as the ten before
    # (the longest lifetime of a growing family, a day's arm records, is 6 days)
    early, late = keys_by_day[10:20], keys_by_day[20:30]
    assert max(late) <= 1.05 * max(early), (keys_by_day, families[-1])
    assert max(late) - min(late) <= 0.05 * max(late), keys_by_day
    early_mb, late_mb = memory_by_day[10:20], memory_by_day[20:30]
    assert max(late_mb) <= 1.1 * max(early_mb), memory_by_day
    # every family that grows with time keeps a bounded number of its keys
    for name, count in families[-1].items():
        assert count <= 1.05 * max(f[name] for f in families[10:20]), (name, count)
