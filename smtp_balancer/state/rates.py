"""Rate rules over the per-minute outcome buckets: one rate.lua call per rule and
(endpoint, provider) pair, pipelined. The feedback daemon runs them per batch and
``smtp-balancer fbl`` per complaint; rate.lua acts (act.lua) when a rule trips."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from smtp_balancer.clock import SYSTEM
from smtp_balancer.config.feedback import RateRuleConfig
from smtp_balancer.state import scripts
from smtp_balancer.state.keys import MINUTE_S, KeySchema, minute_bucket

RATE_CODES = {0: "quiet", 1: "tripped", 2: "still_tripped", 3: "recovered"}


@dataclass(frozen=True)
class RateResult:
    rule: str
    endpoint: str
    provider: str
    outcome: str  # quiet | tripped | still_tripped | recovered
    rate_percent: float
    attempts: int  # the sample: attempts, or delivered messages for complained
    action: str = "suspend_provider"

    @property
    def scope(self) -> str:
        """The provider label of what the action covers: quarantine and suspend_all cover all."""
        return "all" if self.action in ("suspend_all", "quarantine") else self.provider


def evaluate_rates(
    client: redis.Redis,
    keys: KeySchema,
    rules: list[RateRuleConfig],
    pairs: set[tuple[str, str]],
    now: float | None = None,
) -> list[RateResult]:
    if not rules or not pairs:
        return []
    now = SYSTEM.wall() if now is None else now
    jobs = []
    pipe = client.pipeline(transaction=False)
    for rule in rules:
        minutes = [minute_bucket(now - MINUTE_S * i) for i in range(max(1, rule.window // MINUTE_S))]
        for ep, provider in sorted(pairs):
            if rule.providers and provider not in rule.providers:
                continue
            pipe.eval(
                scripts.RATE.text,
                1,
                keys.tripped(rule.name, ep, provider),
                keys.base,
                rule.name,
                ep,
                provider,
                rule.measure,
                rule.above_percent,
                rule.recover_below_percent,
                rule.min_attempts,
                rule.action,
                rule.duration,
                rule.factor,
                *(keys.outcomes(ep, provider, m) for m in minutes),
            )
            jobs.append((rule, ep, provider))
    out = []
    for (rule, ep, provider), reply in zip(jobs, pipe.execute(), strict=True):
        code, rate10k, sample = (int(x) for x in reply)
        outcome = RATE_CODES.get(code, "unknown")
        out.append(RateResult(rule.name, ep, provider, outcome, rate10k / 10_000, sample, rule.action))
    return out
