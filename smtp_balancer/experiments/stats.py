"""Per-arm rates, their confidence intervals and a test of the difference.

scipy.stats does the statistics (an optional extra: ``pip install
smtp-balancer[report]``; the daemons never import this module). Wilson
intervals for each rate; for the difference between two arms, Fisher's exact
test when any expected cell count is under 5, else the chi-square test of the
2x2 table (with Yates's correction).
"""

from __future__ import annotations

from dataclasses import dataclass


class StatsUnavailable(Exception):
    """scipy is not installed."""


def _scipy_stats():  # type: ignore[no-untyped-def]
    try:
        from scipy import stats
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StatsUnavailable(
            "experiment reports need scipy: pip install 'smtp-balancer[report]' (or scipy)"
        ) from exc
    return stats


@dataclass(frozen=True)
class Rate:
    hits: int
    n: int

    @property
    def value(self) -> float:
        return self.hits / self.n if self.n else 0.0

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Wilson score interval; (0, 1) with no sample."""
        if not self.n:
            return 0.0, 1.0
        ci = (
            _scipy_stats().binomtest(self.hits, self.n).proportion_ci(confidence_level=level, method="wilson")
        )
        return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class Difference:
    p_value: float
    method: str  # "fisher" or "chi-square"


def compare(a: Rate, b: Rate) -> Difference:
    """Two-sided test that the two rates differ."""
    stats = _scipy_stats()
    table = [[a.hits, a.n - a.hits], [b.hits, b.n - b.hits]]
    total = a.n + b.n
    column = (a.hits + b.hits, total - a.hits - b.hits)
    expected = [row_n * col / total for row_n in (a.n, b.n) for col in column] if total else [0]
    if min(expected) < 5:
        return Difference(float(stats.fisher_exact(table).pvalue), "fisher")
    return Difference(float(stats.chi2_contingency(table, correction=True).pvalue), "chi-square")
