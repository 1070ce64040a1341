"""Replay's report: the actual routes against the replayed live config and the
candidate, as text or one JSON object. Sans I/O."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from smtp_balancer.replay.hits import Fired
from smtp_balancer.replay.simulate import Run

Z95 = 1.959964  # a two-sided 95% interval


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n (95%)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _totals(run: Run) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for (endpoint, provider, _), n in run.volumes.items():
        out[(endpoint, provider)] += n
    return out


def _action(f: Fired) -> tuple[str, str, str, str]:
    return (f.rule, f.action, f.endpoint, f.provider)


def as_dict(
    actual: Run, live: Run, candidate: Run, rule_names: list[str], unread: Counter[str]
) -> dict[str, Any]:
    deferral = []
    for endpoint, provider in sorted({(e, p) for e, p, _ in candidate.replies}):
        n = sum(
            candidate.replies[(endpoint, provider, s)] for s in ("sent", "deferred", "bounced", "expired")
        )
        k = candidate.replies[(endpoint, provider, "deferred")]
        low, high = wilson(k, n)
        deferral.append(
            {
                "endpoint": endpoint,
                "provider": provider,
                "attempts": n,
                "deferred": k,
                "rate": k / n if n else 0.0,
                "interval_95": [low, high],
                "observed": (endpoint, provider) not in candidate.unobserved,
            }
        )
    live_actions = {_action(f) for f in live.fired}
    cand_actions = {_action(f) for f in candidate.fired}

    def fired(run: Run, other: set[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
        return [
            {
                "rule": f.rule,
                "action": f.action,
                "endpoint": f.endpoint,
                "provider": f.provider,
                "at": _when(f.at),
                "epoch": f.at,
                "seconds": f.seconds,
                "strike": f.strike,
                "in_the_other": _action(f) in other,
            }
            for f in run.fired
        ]

    routes = sorted(set(_totals(actual)) | set(_totals(live)) | set(_totals(candidate)))
    return {
        "messages": actual.messages,
        "lines_not_used": dict(unread),
        "outcomes": {run.name: dict(run.outcomes) for run in (actual, live, candidate)},
        "routes": [
            {
                "endpoint": e,
                "provider": p,
                "actual": _totals(actual)[(e, p)],
                "live_replayed": _totals(live)[(e, p)],
                "candidate": _totals(candidate)[(e, p)],
            }
            for e, p in routes
        ],
        "hourly": {
            run.name: [
                {"endpoint": e, "provider": p, "hour": h, "recipients": n}
                for (e, p, h), n in sorted(run.volumes.items())
            ]
            for run in (actual, live, candidate)
        },
        "caps_reached": {
            run.name: [
                {
                    "endpoint": c.endpoint,
                    "scope": c.scope,
                    "bucket": c.bucket,
                    "at": _when(c.at),
                    "epoch": c.at,
                    "message": c.message,
                }
                for c in sorted(run.caps.values(), key=lambda c: (c.at, c.endpoint, c.scope))
            ]
            for run in (live, candidate)
        },
        "actions": {"live_replayed": fired(live, cand_actions), "candidate": fired(candidate, live_actions)},
        "response_rules_never_matched": [name for name in rule_names if not candidate.matched[name]],
        "spilled": {
            run.name: {k: v for k, v in run.outcomes.items() if k != "route"} for run in (live, candidate)
        },
        "deferral": deferral,
    }


def render(report: dict[str, Any]) -> str:
    out = [f"{report['messages']} messages replayed"]
    for why, n in sorted(report["lines_not_used"].items()):
        out.append(f"  {n} lines not used: {why}")
    out += ["", f"{'endpoint':14} {'provider':12} {'actual':>8} {'live':>8} {'candidate':>9}"]
    for r in report["routes"]:
        out.append(
            f"{r['endpoint'][:14]:14} {r['provider'][:12]:12} {r['actual']:>8}"
            f" {r['live_replayed']:>8} {r['candidate']:>9}"
        )
    out += [
        "",
        "outcomes: "
        + "; ".join(f"{name} {dict(sorted(o.items()))}" for name, o in report["outcomes"].items()),
    ]
    for name, caps in report["caps_reached"].items():
        for c in caps:
            bucket = f" ({c['bucket']})" if c["bucket"] else ""
            out.append(
                f"{name}: {c['endpoint']} {c['scope']} cap reached{bucket} at {c['at']},"
                f" message {c['message']}"
            )
    for name, actions in report["actions"].items():
        for a in actions:
            mark = "" if a["in_the_other"] else "  (only here)"
            out.append(
                f"{name}: rule {a['rule']} {a['action']} ({a['endpoint']}, {a['provider']}) at {a['at']}"
                f" for {a['seconds']}s{mark}"
            )
    if report["response_rules_never_matched"]:
        out.append(
            "response rules that never matched (candidate): "
            + ", ".join(report["response_rules_never_matched"])
        )
    out += ["", "modelled deferral rate per route (candidate), with its 95% interval:"]
    for d in report["deferral"]:
        low, high = d["interval_95"]
        guess = "" if d["observed"] else "  unobserved: the provider's replies on other routes"
        out.append(
            f"  {d['endpoint']:14} {d['provider']:12} {d['deferred']:>6}/{d['attempts']:<6}"
            f" {100 * d['rate']:5.1f}% [{100 * low:.1f}-{100 * high:.1f}]{guess}"
        )
    return "\n".join(out)
