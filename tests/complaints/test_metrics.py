"""The fleet's complaint totals, exported from Redis with bounded labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from smtp_balancer.complaints.metrics import ComplaintLabels, ComplaintTotals


def test_totals_become_counters_and_junk_fields_are_skipped() -> None:
    totals = ComplaintTotals()
    registry = CollectorRegistry()
    registry.register(totals)
    junk = totals.update(
        {
            b"report:complaint": b"3",
            b"report:malformed": b"2",
            b"complaint:out2:yahoo:shop.test": b"2",
            b"complaint:out1:microsoft:other": b"1",
            b"complaint:gone:yahoo:other": b"9",  # an endpoint the config no longer has
            b"complaint:out1:yahoo:nobody.test": b"9",  # not a configured tenant
            b"report:complaint-ish": b"1",
            b"report:unattributed": b"\xff\xfe",
            b"garbage": b"1",
            b"arm:ab:solo1": b"4",
            b"arm:ab:gone": b"1",  # an arm the config no longer has
        },
        ComplaintLabels(
            endpoints=frozenset({"out1", "out2"}),
            providers=frozenset({"yahoo", "microsoft", "google", "other"}),
            tenants=frozenset({"shop.test", "other"}),
            reporting=frozenset({"yahoo", "microsoft"}),
            arms=frozenset({("ab", "solo1"), ("ab", "weights")}),
        ),
    )
    assert junk == 6
    page = generate_latest(registry).decode()
    assert 'smtp_balancer_fbl_reports_total{result="complaint"} 3.0' in page
    assert 'smtp_balancer_fbl_reports_total{result="malformed"} 2.0' in page
    assert 'smtp_balancer_fbl_reports_total{result="unattributed"} 0.0' in page
    assert 'smtp_balancer_complaints_total{endpoint="out2",provider="yahoo",tenant="shop.test"} 2.0' in page
    assert 'smtp_balancer_complaints_total{endpoint="out1",provider="microsoft",tenant="other"} 1.0' in page
    assert "gone" not in page and "nobody.test" not in page
    # every endpoint x reporting provider x tenant is there from 0, so increase() sees the first
    assert 'smtp_balancer_complaints_total{endpoint="out1",provider="yahoo",tenant="shop.test"} 0.0' in page
    assert page.count("smtp_balancer_complaints_total{") == 2 * 2 * 2
    assert 'provider="google"' not in page  # Gmail sends no ARF reports
    assert 'smtp_balancer_experiment_complaints_total{arm="solo1",experiment="ab"} 4.0' in page
    assert 'smtp_balancer_experiment_complaints_total{arm="weights",experiment="ab"} 0.0' in page
    assert 'arm="gone"' not in page
