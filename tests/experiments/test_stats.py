"""The report's statistics against scipy and textbook values, small samples included."""

from __future__ import annotations

import pytest
from scipy import stats

from smtp_balancer.experiments.report import ArmStats, render, verdicts
from smtp_balancer.experiments.stats import Rate, compare


def test_wilson_interval_matches_known_values():
    low, high = Rate(8, 10).interval()
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)  # Wilson, 95%: 8 of 10
    assert Rate(0, 0).interval() == (0.0, 1.0)


def test_small_samples_use_fishers_exact_test():
    # Fisher's tea-tasting table: p = 0.4857 (two-sided)
    diff = compare(Rate(3, 4), Rate(1, 4))
    assert diff.method == "fisher" and round(diff.p_value, 4) == 0.4857


def test_large_samples_use_the_chi_square_test_as_scipy_computes_it():
    a, b = Rate(48, 1000), Rate(21, 1000)
    diff = compare(a, b)
    expected = stats.chi2_contingency([[48, 952], [21, 979]], correction=True).pvalue
    assert diff.method == "chi-square" and diff.p_value == pytest.approx(expected)
    assert 0.001 < diff.p_value < 0.002


def arm(name: str, decided: int, sent: int, deferred: int, bounced: int = 0) -> ArmStats:
    return ArmStats(name, f"pool-{name}", 50, decided, sent, deferred, bounced, {}, {"0.5": sent - 1, "5": 1})


def test_the_verdict_names_the_better_arm_with_its_p_value():
    (line,) = verdicts([arm("static", 4210, 4210, 202), arm("adaptive", 4230, 4230, 88)])
    assert line.startswith("adaptive defers less than static: 2.0% against 4.6%, p = ")
    assert line.endswith("(chi-square), 4,210 messages per arm")


def test_no_verdict_while_the_sample_is_small_and_none_without_a_difference():
    (small,) = verdicts([arm("a", 50, 50, 5), arm("b", 500, 500, 5)])
    assert small == (
        "sample still too small for a verdict on b against a: a has 55 delivery attempts, 100 needed per arm"
    )
    (same,) = verdicts([arm("a", 1000, 1000, 50), arm("b", 1000, 1000, 52)])
    assert same.startswith("no significant difference in deferrals between b and a: 4.9% against 4.8%")


def test_render_shows_rates_intervals_latency_and_classes():
    a = arm("static", 200, 190, 30, 10)
    a.classes = {"rate_limited": 30, "invalid_recipient": 10}
    text = render("ab", "running", [a, arm("adaptive", 200, 200, 2)])
    assert "experiment ab (running)" in text
    assert "static    pool-static    50%    200" in text
    assert "95.0% [91.0-97.3]" in text  # delivered 190 of 200 final outcomes
    assert "≤0.5s / ≤0.5s" in text
    assert "static: refusals by class: rate_limited 30, invalid_recipient 10" in text
    assert "bounced by class" not in text  # no bounced:<class> counts in this arm


def test_render_gives_bounces_by_class_per_final_outcome():
    a = arm("static", 200, 190, 0, 10)
    a.bounced_classes = {"invalid_recipient": 8, "policy_block": 2}
    text = render("ab", "running", [a, arm("adaptive", 200, 200, 0)])
    # 8 and 2 of 200 final outcomes, Wilson intervals
    assert "static: bounced by class: invalid_recipient 4.0% [2.0-7.7], policy_block 1.0% [0.3-3.6]" in text


def test_significant_bounce_and_complaint_differences_get_their_own_lines():
    control, other = arm("a", 2000, 2000, 40, 60), arm("b", 2000, 2000, 41, 20)
    control.complained, other.complained = 30, 4
    lines = verdicts([control, other])
    assert lines[0].startswith("no significant difference in deferrals between b and a")
    p_bounce = stats.chi2_contingency([[20, 2000], [60, 2000]], correction=True).pvalue
    assert lines[1] == (
        f"b bounces less than a: 1.0% against 2.9%, p = {p_bounce:.3g} (chi-square), 2,000 messages per arm"
    )
    assert lines[2].startswith("b draws fewer complaints than a: 0.20% against 1.50%, p = ")
    # a difference that is not significant, or too few deliveries, says nothing more
    control.complained, other.complained = 3, 2
    assert len(verdicts([control, other])) == 2
    assert len(verdicts([arm("a", 150, 150, 2, 20), arm("b", 90, 90, 2, 0)])) == 1


def test_render_shows_the_complaint_rate_per_delivered_message():
    a = arm("static", 200, 200, 0)
    a.complained = 4
    assert "2.00% [0.78-5.03]" in render("ab", "running", [a, arm("adaptive", 200, 200, 0)])
