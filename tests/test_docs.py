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
    """docs/reference/metrics.md against the whole registry, both ways: a metric defined
    in a module the generator does not read (tools/reference.py) would be missing."""
    import importlib

    from prometheus_client import REGISTRY

    from tools.reference import METRIC_GROUPS

    for _, modules in METRIC_GROUPS:
        for module in modules:
            importlib.import_module(module)
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


# issue #35's five questions of an operator new to the docs: the page that answers
# each, the section, and the command that is the answer (each run by a test)
QUESTIONS = {
    "what goes into main.cf and master.cf on each host": (
        "docs/fleet.md",
        "## Fleet layout",
        "smtp-balancer render postfix --postconf --host mta1",  # integration/test_fleet.py
    ),
    "how to change a weight with redis-cli": (
        "docs/runbooks.md",
        "## Change a weight",
        "redis-cli HSET '{sb}:pool:bulk:weights' out2 3",  # tests/test_runbooks.py
    ),
    "how to warm up a new IP": (
        "docs/runbooks.md",
        "## Warm up a new IP",
        "smtp-balancer status --endpoint out3",
    ),
    "why a message went where it went": (
        "docs/runbooks.md",
        "## Why did a message go there",
        "smtp-balancer explain --sender news@shop.example --rcpt bob@gmail.com",
    ),
    "what to do when Gmail throttles an IP": (
        "docs/runbooks.md",
        "## A provider throttles an IP",
        'smtp-balancer suspend out2 google --for 2h --reason "421-4.7.28 from gmail"',
    ),
}


def links(page: Path) -> set[Path]:
    """The files a page links to, resolved."""
    found = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text())
    return {(page.parent / target).resolve() for target in found}


def test_each_of_the_five_questions_is_answered_two_clicks_from_the_readme() -> None:
    readme = ROOT / "README.md"
    within_two = links(readme) | {two for one in links(readme) if one.suffix == ".md" for two in links(one)}
    for question, (page, heading, command) in QUESTIONS.items():
        path = (ROOT / page).resolve()
        assert path in within_two, f"{question}: {page} is not within two clicks of the README"
        text = path.read_text()
        assert heading + "\n" in text, f"{question}: {page} has no {heading!r}"
        section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
        assert command in section, f"{question}: the answer {command!r} is not in {heading!r}"


def test_the_fleet_page_renders_as_the_fleet_test_installs() -> None:
    """integration/test_fleet.py installs each host with conftest.apply_postconf, which
    runs the page's render command (with -c and --postfix-dir for the harness)."""
    from integration.conftest import postconf_command

    argv = postconf_command(Path("c.yaml"), Path("etc"), "mta1")
    assert argv[1:3] == ["-c", "c.yaml"] and argv[-2:] == ["--postfix-dir", "etc"]
    block = (ROOT / "docs" / "fleet.md").read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.strip() for line in block.strip().splitlines()]
    assert lines == [
        "smtp-balancer render postfix --postconf --host mta1 > /root/smtp-balancer-postconf.sh",
        "sh /root/smtp-balancer-postconf.sh",
        "postfix reload",
    ]
    assert lines[0].split(" > ")[0].split()[1:] == argv[3:-2]
