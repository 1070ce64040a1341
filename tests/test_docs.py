"""The docs site (docs/, mkdocs.yml) builds in strict mode: a broken link, a page
missing from the nav or a bad anchor fails the build, and so this test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_build_strict_with_no_warning(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert not [line for line in run.stderr.splitlines() if "WARNING" in line], run.stderr
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()


def test_the_readme_is_short_and_its_links_reach_files() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert targets and not [t for t in targets if not (ROOT / t).is_file()], targets
    # the two commands of the quick start, as CI runs the second
    assert "make demo" in text and "make test" in text


def test_the_metrics_reference_names_every_metric_and_only_those() -> None:
    """docs/reference/metrics.md against the registry, both ways: every metric the
    daemons define is listed, and every one listed exists."""
    import importlib
    import importlib.util

    from prometheus_client import REGISTRY

    for module in (
        "smtp_balancer.observe.metrics",
        "smtp_balancer.observe.stalls",
        "smtp_balancer.engine.plumbing",
        "policyd.metrics",
        "smtp_balancer.feedback.metrics",
        "smtp_balancer.feedback.state_metrics",
        "smtp_balancer.complaints.metrics",
        "smtp_balancer.requeue.metrics",
    ):
        importlib.import_module(module)
    spec = importlib.util.spec_from_file_location("milter_metrics_for_docs", ROOT / "milter" / "metrics.py")
    assert spec is not None and spec.loader is not None
    if not any(f.name == "smtp_balancer_milter_classified" for f in REGISTRY.collect()):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))  # not imported yet in this process
    defined = {
        f.name + ("_total" if f.type == "counter" else "")
        for f in REGISTRY.collect()
        if f.name.startswith("smtp_balancer_")
    }
    listed = set(
        re.findall(r"`(smtp_balancer_[a-z0-9_]+)`", (ROOT / "docs/reference/metrics.md").read_text())
    )
    assert defined - listed == set(), "defined, not in docs/reference/metrics.md"
    assert listed - defined == set(), "in docs/reference/metrics.md, defined nowhere"


# what each key builder's parameters are called in docs/reference/redis.md
PLACEHOLDERS = {
    "endpoint": "<ep>",
    "provider": "<provider>",
    "pool": "<pool>",
    "name": "<name>",
    "instance": "<instance>",
    "queue_id": "<queue id>",
    "experiment": "<experiment>",
    "arm": "<arm>",
    "tenant": "<tenant>",
    "rule": "<rule>",
    "address": "<address>",
}
TIME_BUCKETS = {  # (method, parameter) -> the bucket's format
    ("day_counter", "bucket"): "<YYYYMMDD>",
    ("hour_counter", "bucket"): "<YYYYMMDDHH>",
    ("daily", "day"): "<YYYYMMDD>",
    ("outcomes", "minute"): "<YYYYMMDDHHMM>",
    ("tenant_outcomes", "hour"): "<YYYYMMDDHH>",
}
BUILT_IN_LUA = {"{sb}:strikes:<rule>:<ep>:<provider>"}  # hit.lua names it from a rule's hit key


def test_the_redis_reference_names_every_key_and_only_those() -> None:
    """docs/reference/redis.md against state/keys.py's KeySchema, both ways."""
    import inspect

    from smtp_balancer.state.keys import KeySchema

    keys = KeySchema()
    built = set(BUILT_IN_LUA)
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if (
            name.startswith("_")
            or name.endswith(("_prefix", "_pattern", "prefixes"))
            or name in ("ttl_of", "tracked_key")
        ):
            continue
        args = [TIME_BUCKETS.get((name, p)) or PLACEHOLDERS[p] for p in inspect.signature(method).parameters]
        built.add(method(*args))
    listed = set(re.findall(r"^\| `(\{sb\}:[^`]+)` \|", (ROOT / "docs/reference/redis.md").read_text(), re.M))
    assert built - listed == set(), "keys KeySchema builds that docs/reference/redis.md does not list"
    assert listed - built == set(), "keys docs/reference/redis.md lists that nothing builds"
