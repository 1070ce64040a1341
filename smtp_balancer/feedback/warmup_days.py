"""A managed warm-up's next step, judged on the day it was on, sans I/O.

``advance: sending_days``: a day counts only when the endpoint used at least
``min_share`` of that day's cap. ``hold_on``: outcome thresholds over that day
keep the step (``hold``) or go back one (``step_back``); a step back wins over a
hold, and both win over advancing.
"""

from __future__ import annotations

from collections.abc import Mapping

from smtp_balancer.config.builtins import Steps
from smtp_balancer.config.endpoints import WarmupConfig


def judge(
    step: int, schedule: Steps, used: int, outcomes: Mapping[str, int], cfg: WarmupConfig, day: str
) -> tuple[int, str]:
    """The step for the next day, and why. ``used``: the day's counted deliveries;
    ``outcomes``: that day's sent/deferred/bounced/expired/complained."""
    on = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    if step > len(schedule):
        return step, "warm: the schedule is over"
    cap = schedule[step - 1][0]
    sent = outcomes.get("sent", 0)
    attempts = sent + sum(outcomes.get(s, 0) for s in ("deferred", "bounced", "expired"))
    hold = ""
    for rule in cfg.hold_on:
        if rule.measure == "complained":
            value, sample, of = outcomes.get("complained", 0), sent, "delivered"
        elif rule.measure == "deferred":
            value, sample, of = outcomes.get("deferred", 0), attempts, "attempts"
        else:
            value = outcomes.get("bounced", 0) + outcomes.get("expired", 0)
            sample, of = attempts, "attempts"
        if sample < rule.min_attempts or 100 * value / sample <= rule.above_percent:
            continue
        why = f"{rule.measure} {100 * value / sample:.2f}% of {sample} {of} > {rule.above_percent}% on {on}"
        if rule.then == "step_back":
            return max(1, step - 1), f"stepped back: {why}"
        hold = hold or f"held: {why}"
    if hold:
        return step, hold
    if cfg.advance == "sending_days" and used < cfg.min_share * cap:
        return step, f"held: sent {used} of its cap {cap} on {on}, under {cfg.min_share:.0%}"
    return step + 1, f"advanced: sent {used} of its cap {cap} on {on}"
