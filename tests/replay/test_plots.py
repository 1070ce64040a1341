"""Replay's HTML report: one plot per endpoint of the numbers the report holds, names
escaped, and a clear error without matplotlib."""

from __future__ import annotations

import base64
import re
import sys
from collections import Counter

import pytest

from smtp_balancer.decision.planner import Planner
from smtp_balancer.replay.plots import PlotsUnavailable, as_html, hourly_by_endpoint, pyplot
from smtp_balancer.replay.replies import ReplyModel
from smtp_balancer.replay.report import as_dict, render
from smtp_balancer.replay.simulate import Simulator, actual_volumes
from tests.replay.scenario import config, logged


def report() -> dict:
    messages, attempts = logged()
    live = Simulator(config(), ReplyModel.of(attempts), "live_replayed").replay(messages)
    pools = {"main": {"endpoints": [{"endpoint": "out1", "weight": 3}, {"endpoint": "out3", "weight": 1}]}}
    cand = Simulator(config({"pools": pools}), ReplyModel.of(attempts), "candidate").replay(messages)
    return as_dict(actual_volumes(messages, Planner(config())), live, cand, [], Counter())


def test_the_plotted_series_are_the_reports_hourly_volumes_per_endpoint():
    r = report()
    series = hourly_by_endpoint(r)
    assert set(series) == {"out1", "out2", "out3"}
    for run in ("actual", "live_replayed", "candidate"):
        for endpoint, runs in series.items():
            want = sum(row["recipients"] for row in r["hourly"][run] if row["endpoint"] == endpoint)
            assert sum(runs[run].values()) == want
    assert series["out2"]["candidate"] == {} and sum(series["out2"]["actual"].values()) > 0


def test_the_page_inlines_a_png_per_endpoint_and_escapes_what_it_shows():
    r = report()
    r["hourly"]["candidate"].append(
        {"endpoint": "<script>", "provider": "x", "hour": "2026-11-24 10:00", "recipients": 1}
    )
    page = as_html(r, render(r) + "\n<b>not markup</b>")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 and all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;not markup" in page


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as when it is not installed
    with pytest.raises(PlotsUnavailable, match=r"pip install 'smtp-balancer\[report\]'"):
        pyplot()
