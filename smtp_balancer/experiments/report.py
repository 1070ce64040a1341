"""An experiment's report: per arm, messages, delivered, deferred and bounced
(with classes), complaints, latency, each with a 95% interval, and a verdict in
plain words on each arm against the first (the control): deferrals always,
bounces and complaints where they differ significantly."""

from __future__ import annotations

from dataclasses import dataclass, field

from smtp_balancer.experiments.stats import Rate, compare
from smtp_balancer.state.values import parse_count

MIN_ATTEMPTS = 100  # per arm, before a verdict is given at all
SIGNIFICANCE = 0.05


@dataclass
class ArmStats:
    name: str
    strategy: str  # "pool bulk", "rules a > b"
    split: int
    decided: int = 0
    sent: int = 0
    deferred: int = 0
    bounced: int = 0  # bounced and expired
    classes: dict[str, int] = field(default_factory=dict)
    latency: dict[str, int] = field(default_factory=dict)  # bucket upper bound -> deliveries
    complained: int = 0  # spam complaints (`smtp-balancer fbl`) about the arm's messages
    bounced_classes: dict[str, int] = field(default_factory=dict)  # bounces and expiries by class

    @classmethod
    def of(cls, name: str, strategy: str, split: int, raw: dict[str, str]) -> ArmStats:
        def n(key: str) -> int:
            return parse_count(raw.get(key)) or 0

        arm = cls(name, strategy, split, n("decided"), n("sent"), n("deferred"), n("bounced") + n("expired"))
        arm.complained = n("complained")
        for key, value in raw.items():
            if key.startswith("class:"):
                arm.classes[key[6:]] = parse_count(value) or 0
            elif key.startswith("bounced:"):
                arm.bounced_classes[key[8:]] = parse_count(value) or 0
            elif key.startswith("lat:"):
                arm.latency[key[4:]] = parse_count(value) or 0
        return arm

    @property
    def attempts(self) -> int:
        return self.sent + self.deferred + self.bounced

    @property
    def final(self) -> int:
        return self.sent + self.bounced

    def latency_quantile(self, q: float) -> str:
        """The upper bound of the bucket the q-quantile falls in ("≤ 0.5s"), or "-"."""
        total = sum(self.latency.values())
        if not total:
            return "-"
        seen = 0
        for upper in sorted(self.latency, key=lambda u: float(u)):
            seen += self.latency[upper]
            if seen >= q * total:
                return f"≤{upper}s" if upper != "inf" else ">300s"
        return "-"


def _pct(rate: Rate, digits: int = 1) -> str:
    low, high = rate.interval()
    return f"{100 * rate.value:.{digits}f}% [{100 * low:.{digits}f}-{100 * high:.{digits}f}]"


def render(name: str, state: str, arms: list[ArmStats]) -> str:
    out = [f"experiment {name} ({state})", ""]
    head = ["ARM", "STRATEGY", "SPLIT", "MESSAGES", "DELIVERED", "DEFERRED", "BOUNCED", "COMPLAINTS"]
    rows = [[*head, "LATENCY p50/p95"]]
    for a in arms:
        rows.append(
            [
                a.name,
                a.strategy,
                f"{a.split}%",
                str(a.decided),
                _pct(Rate(a.sent, a.final)),
                _pct(Rate(a.deferred, a.attempts)),
                _pct(Rate(a.bounced, a.final)),
                _pct(Rate(a.complained, a.sent), 2),
                f"{a.latency_quantile(0.5)} / {a.latency_quantile(0.95)}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for a in arms:
        if a.classes:
            classes = ", ".join(f"{c} {n}" for c, n in sorted(a.classes.items(), key=lambda x: -x[1]))
            out.append(f"  {a.name}: refusals by class: {classes}")
        if a.bounced_classes:
            by_class = sorted(a.bounced_classes.items(), key=lambda x: -x[1])
            bounced = ", ".join(f"{c} {_pct(Rate(n, a.final))}" for c, n in by_class)
            out.append(f"  {a.name}: bounced by class: {bounced}")
    out += [
        "",
        "rates: share [95% interval]; deferred per attempt, delivered and bounced per final outcome,",
        "complaints per delivered message",
    ]
    out += ["", *verdicts(arms)]
    return "\n".join(out)


def verdicts(arms: list[ArmStats]) -> list[str]:
    control = arms[0]
    out = []
    for arm in arms[1:]:
        small = [a for a in (control, arm) if a.attempts < MIN_ATTEMPTS]
        if small:
            names = ", ".join(f"{a.name} has {a.attempts}" for a in small)
            out.append(
                f"sample still too small for a verdict on {arm.name} against {control.name}: "
                f"{names} delivery attempts, {MIN_ATTEMPTS} needed per arm"
            )
            continue
        a, b = Rate(control.deferred, control.attempts), Rate(arm.deferred, arm.attempts)
        diff = compare(a, b)
        per_arm = f"{min(control.decided, arm.decided):,} messages per arm"
        p = f"p = {diff.p_value:.3g} ({diff.method})"
        if diff.p_value < SIGNIFICANCE:
            better, worse, rb, rw = (arm, control, b, a) if b.value < a.value else (control, arm, a, b)
            out.append(
                f"{better.name} defers less than {worse.name}: {100 * rb.value:.1f}% against "
                f"{100 * rw.value:.1f}%, {p}, {per_arm}"
            )
        else:
            out.append(
                f"no significant difference in deferrals between {arm.name} and {control.name}: "
                f"{100 * b.value:.1f}% against {100 * a.value:.1f}%, {p}, {per_arm}"
            )
        out += _other_differences(control, arm, per_arm)
    return out


def _other_differences(control: ArmStats, arm: ArmStats, per_arm: str) -> list[str]:
    """Bounces (per final outcome) and complaints (per delivered message), only where
    the difference is significant and both arms have the sample."""
    out = []
    for verb, digits, a, b in (
        ("bounces less", 1, Rate(control.bounced, control.final), Rate(arm.bounced, arm.final)),
        ("draws fewer complaints", 2, Rate(control.complained, control.sent), Rate(arm.complained, arm.sent)),
    ):
        if min(a.n, b.n) < MIN_ATTEMPTS or a.hits + b.hits == 0:
            continue
        diff = compare(a, b)
        if diff.p_value >= SIGNIFICANCE:
            continue
        better, worse, rb, rw = (arm, control, b, a) if b.value < a.value else (control, arm, a, b)
        out.append(
            f"{better.name} {verb} than {worse.name}: {100 * rb.value:.{digits}f}% against "
            f"{100 * rw.value:.{digits}f}%, p = {diff.p_value:.3g} ({diff.method}), {per_arm}"
        )
    return out
