"""Compiled modules run only while they match their sources (smtp_balancer/native.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smtp_balancer import native

SUFFIX = ".cpython-311-x86_64-linux-gnu.so"
REPO = Path(__file__).resolve().parents[1]


def tree(tmp_path: Path, record: dict[str, str] | None) -> Path:
    """A package with two 'compiled' modules: garbage extensions that cannot load,
    so a test that imports one proves which file was used."""
    pkg = tmp_path / "smtp_balancer"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    for module in ("a", "sub/b"):
        (pkg / f"{module}.py").write_text(f"WHERE = 'source {module}'\n")
        (pkg / f"{module}{SUFFIX}").write_bytes(b"not an ELF file")
    if record is not None:
        (pkg / native.MANIFEST).write_text(json.dumps(record))
    return tmp_path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def matching(pkg: Path) -> dict[str, str]:
    """A build's record of both modules, each matching its source."""
    return {"smtp_balancer.a": digest(pkg / "a.py"), "smtp_balancer.sub.b": digest(pkg / "sub" / "b.py")}


def guarded(root: Path, *imports: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter: native.guard on ``root``, then each import in turn, printing
    the guard's answer and each module's WHERE."""
    lines = [f"import {module}; print({module}.WHERE)" for module in imports]
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        from pathlib import Path
        sys.path.insert(0, {str(root)!r})
        spec = importlib.util.spec_from_file_location("native", {str(REPO / "smtp_balancer" / "native.py")!r})
        native = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(native)
        print(native.guard(Path({str(root)!r})))
        """
    ) + "\n".join(lines)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def test_every_module_matching_its_record_is_in_use(tmp_path: Path) -> None:
    root = tree(tmp_path, {})
    pkg = root / "smtp_balancer"
    record = matching(pkg)
    (pkg / native.MANIFEST).write_text(json.dumps(record))
    modules, changed, unrecorded = native.audit(root, ["smtp_balancer"])
    assert sorted(modules) == ["smtp_balancer.a", "smtp_balancer.sub.b"]
    assert changed == unrecorded == []


@pytest.mark.parametrize(
    ("record", "changed", "unrecorded"),
    [
        (None, [], ["smtp_balancer.a", "smtp_balancer.sub.b"]),  # no record: nothing is trusted
        ({"smtp_balancer.a": "0" * 64}, ["smtp_balancer.a"], ["smtp_balancer.sub.b"]),
    ],
)
def test_modules_without_a_matching_record_are_changed_or_unrecorded(
    tmp_path: Path, record: dict[str, str] | None, changed: list[str], unrecorded: list[str]
) -> None:
    assert native.audit(tree(tmp_path, record), ["smtp_balancer"])[1:] == (changed, unrecorded)


def test_a_garbled_record_trusts_nothing(tmp_path: Path) -> None:
    root = tree(tmp_path, None)
    (root / "smtp_balancer" / native.MANIFEST).write_text("[1, 2")
    assert native.recorded(root) == {}
    assert len(native.audit(root, ["smtp_balancer"])[2]) == 2


def test_one_changed_source_sends_every_module_to_its_source(tmp_path: Path) -> None:
    """b matches its record, a does not: both load from source (a real interpreter)."""
    root = tree(tmp_path, {})
    pkg = root / "smtp_balancer"
    record = {"smtp_balancer.a": "0" * 64, "smtp_balancer.sub.b": digest(pkg / "sub" / "b.py")}
    (pkg / native.MANIFEST).write_text(json.dumps(record))
    out = guarded(root, "smtp_balancer.a", "smtp_balancer.sub.b")
    assert out.stdout.splitlines() == ["[]", "source a", "source sub/b"], out.stderr
    assert (
        "1 compiled module(s) differ from their sources or lost their compiled file (smtp_balancer.a)"
        in out.stderr
    )


def test_a_compiled_file_deleted_by_hand_sends_every_module_to_its_source(tmp_path: Path) -> None:
    """a and b are the build's and match, but a's extension is gone: a would run as Python
    beside a compiled b that calls a's compiled twin, so both load from source."""
    root = tree(tmp_path, {})
    pkg = root / "smtp_balancer"
    record = matching(pkg)
    (pkg / native.MANIFEST).write_text(json.dumps(record))
    (pkg / f"a{SUFFIX}").unlink()
    assert native.audit(root, ["smtp_balancer"])[1:] == (["smtp_balancer.a"], [])
    out = guarded(root, "smtp_balancer.sub.b", "smtp_balancer.a")
    assert out.stdout.splitlines() == ["[]", "source sub/b", "source a"], out.stderr
    assert (
        "1 compiled module(s) differ from their sources or lost their compiled file (smtp_balancer.a)"
        in out.stderr
    )


def test_a_module_the_build_recorded_and_the_project_dropped_is_ignored(tmp_path: Path) -> None:
    """The record names a module with neither source nor extension (removed since): nothing
    of it can be imported, so the others stay compiled."""
    root = tree(tmp_path, {})
    pkg = root / "smtp_balancer"
    record = matching(pkg)
    (pkg / native.MANIFEST).write_text(json.dumps({**record, "smtp_balancer.gone": "0" * 64}))
    assert native.audit(root, ["smtp_balancer"])[1:] == ([], [])


def test_an_older_builds_leftover_alone_loads_from_source(tmp_path: Path) -> None:
    """a is the build's and matches; b is no longer compiled (no record): b loads from its
    source, a is still tried compiled (its garbage extension then fails to load)."""
    root = tree(tmp_path, {})
    pkg = root / "smtp_balancer"
    (pkg / native.MANIFEST).write_text(json.dumps({"smtp_balancer.a": digest(pkg / "a.py")}))
    out = guarded(root, "smtp_balancer.sub.b", "smtp_balancer.a")
    assert out.stdout.splitlines() == ["['smtp_balancer.a']", "source sub/b"]
    assert "smtp_balancer.sub.b: compiled by an older build, run as Python" in out.stderr
    assert out.returncode != 0 and ("invalid ELF header" in out.stderr or "file too short" in out.stderr)


def test_matching_modules_load_compiled(tmp_path: Path) -> None:
    """The guard leaves matching modules alone: Python loads the extension (here garbage,
    so the import fails, which proves the extension was the one tried)."""
    root = tree(tmp_path, {})
    pkg = root / "smtp_balancer"
    record = matching(pkg)
    (pkg / native.MANIFEST).write_text(json.dumps(record))
    out = guarded(root, "smtp_balancer.a")
    assert out.stdout.splitlines() == ["['smtp_balancer.a', 'smtp_balancer.sub.b']"]
    assert out.returncode != 0 and ("invalid ELF header" in out.stderr or "file too short" in out.stderr)


@pytest.mark.skipif(
    not os.environ.get("SB_REQUIRE_COMPILED"), reason="CI sets SB_REQUIRE_COMPILED: the install must compile"
)
def test_the_installed_tree_runs_compiled() -> None:
    """In CI (.ci/run): the install compiled, every module it recorded is in use, so the
    suite tests what is shipped and benchmarked."""
    import smtp_balancer.decision.planner
    import smtp_balancer.replay.simulate

    record = native.recorded(REPO)
    assert record, "the install compiled nothing (see its output: gcc, python3-dev?)"
    assert sorted(record) == smtp_balancer.COMPILED
    for module in (smtp_balancer.decision.planner, smtp_balancer.replay.simulate):
        assert module.__file__ is not None and module.__file__.endswith(".so"), module.__file__


@pytest.mark.skipif(
    not os.environ.get("SB_REQUIRE_COMPILED"), reason="CI sets SB_REQUIRE_COMPILED: the install must compile"
)
def test_every_module_setup_py_names_was_compiled_by_the_last_install() -> None:
    """A module added to setup.py's list that mypy refuses makes the install fall back to
    Python (pip -q hides why), and on a machine with an older build its record still
    looks whole: every module named in the list must be in the record."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    (listing,) = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPILED" for t in node.targets)
    ]
    named = {
        node.value.removesuffix(".py").replace("/", ".")
        for node in ast.walk(listing)
        # the paths written out (the glob over decision/ is checked by the test above)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.endswith(".py")
        and "/" in node.value
    }
    assert len(named) > 10, named  # the list was found
    missing = named - set(native.recorded(REPO))
    assert not missing, (
        f"named in setup.py, not compiled (run bash .ci/install and read its errors): {missing}"
    )
