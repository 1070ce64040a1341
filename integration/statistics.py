"""Statistical assertions for tests of random choices (scipy).

Each assertion fails falsely with probability at most ``ALPHA`` = 1e-7, so a test
suite with a handful of them fails falsely far less than once in a million runs.
A hand-picked tolerance is never used instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from scipy import stats

ALPHA = 1e-7


def assert_binomial(k: int, n: int, p: float, what: object = "") -> None:
    """``k`` successes out of ``n`` are consistent with probability ``p`` (two-sided)."""
    pvalue = stats.binomtest(k, n, p).pvalue
    assert pvalue > ALPHA, (what, k, n, p, pvalue)


def assert_shares(observed: Mapping[str, int], expected: Mapping[str, float], what: object = "") -> None:
    """Counts per category are consistent with the expected shares (chi-square).

    A category that is not expected may not appear at all.
    """
    extra = set(observed) - set(expected)
    assert not extra or all(observed[k] == 0 for k in extra), (what, observed, expected)
    names = sorted(expected)
    counts = [observed.get(name, 0) for name in names]
    total = sum(counts)
    weight = sum(expected.values())
    pvalue = stats.chisquare(counts, [expected[name] / weight * total for name in names]).pvalue
    assert pvalue > ALPHA, (what, observed, expected, pvalue)


def assert_same_shares(a: Mapping[str, int], b: Mapping[str, int], what: object = "") -> None:
    """Two samples' counts per category are consistent with one set of shares
    (chi-square test of the 2 x k table; categories empty in both are left out)."""
    names = sorted(k for k in set(a) | set(b) if a.get(k, 0) or b.get(k, 0))
    if len(names) < 2:
        assert names == [] or (a.get(names[0], 0) > 0) == (b.get(names[0], 0) > 0), (what, a, b)
        return
    table = [[a.get(n, 0) for n in names], [b.get(n, 0) for n in names]]
    pvalue = stats.chi2_contingency(table).pvalue
    assert pvalue > ALPHA, (what, a, b, pvalue)
