"""Replay's HTML report: the text report, and for each endpoint a plot of its hourly
volume, actual against the live config replayed and the candidate. matplotlib draws
the plots (an optional extra, as scipy is for experiment reports); each PNG is
inlined, so the page is one file to mail or attach to a change request."""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from typing import Any

RUNS = ("actual", "live_replayed", "candidate")
# (colour, line, marker): the actual line last and hollow, so a replay that matches it
# still shows both
STYLE = {
    "candidate": ("tab:orange", "-", "^"),
    "live_replayed": ("tab:blue", "--", "o"),
    "actual": ("black", ":", "s"),
}


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def pyplot() -> Any:
    """matplotlib's pyplot on a backend that needs no display; a clear error without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError as exc:
        raise PlotsUnavailable(
            "replay --html needs matplotlib: pip install 'smtp-balancer[report]' (or matplotlib)"
        ) from exc
    return plt


def hourly_by_endpoint(report: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """endpoint -> run -> hour -> recipients (every provider together)."""
    out: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: {run: defaultdict(int) for run in RUNS})
    for run in RUNS:
        for row in report["hourly"][run]:
            out[row["endpoint"]][run][row["hour"]] += row["recipients"]
    return {e: {run: dict(hours) for run, hours in runs.items()} for e, runs in sorted(out.items())}


def png(endpoint: str, runs: dict[str, dict[str, int]], plt: Any) -> bytes:
    hours = sorted({h for series in runs.values() for h in series})
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=96)
    try:
        for run, (colour, line, marker) in STYLE.items():
            ax.plot(
                range(len(hours)),
                [runs[run].get(h, 0) for h in hours],
                line,
                color=colour,
                label=run,
                marker=marker if len(hours) < 30 else None,
                markersize=9 if run == "actual" else 6,
                markerfacecolor="none" if run == "actual" else colour,
            )
        step = max(1, len(hours) // 12)
        ax.set_xticks(range(0, len(hours), step), [h[5:] for h in hours[::step]], rotation=30, ha="right")
        ax.set_ylabel("recipients per hour")
        ax.set_title(f"{endpoint}: hourly volume (UTC)")
        ax.set_ylim(bottom=0)
        ax.legend(loc="best")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def as_html(report: dict[str, Any], text: str) -> str:
    """The whole report as one HTML page: plots first, then the text report."""
    plt = pyplot()
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>smtp-balancer replay</title>',
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}</style>",
        "</head><body>",
        f"<h1>Replay: {report['messages']} messages</h1>",
    ]
    for endpoint, runs in hourly_by_endpoint(report).items():
        data = base64.b64encode(png(endpoint, runs, plt)).decode()
        name = html.escape(endpoint)
        parts.append(f"<h2>{name}</h2>")
        parts.append(f'<img alt="hourly volume of {name}" src="data:image/png;base64,{data}">')
    parts += ["<h2>Report</h2>", f"<pre>{html.escape(text)}</pre>", "</body></html>"]
    return "\n".join(parts) + "\n"
