"""Compiled modules (setup.py, mypyc) are imported only while their sources match.

A compiled module sits beside its source, and Python prefers it: after an edit
or a ``git pull`` it would run the old code. The build records each module it
compiled with its source's SHA-256 (compiled.json); when the package is first
imported, if any compiled module's source differs (or its compiled file is gone),
every compiled module is imported from its source instead (they are one build:
compiled code calls the other compiled modules directly), and one line on stderr
says so. A compiled
module the record does not list (an older build's) is imported from its source.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

MANIFEST = "compiled.json"
PACKAGES = ("smtp_balancer", "policyd")  # the top-level packages whose modules setup.py compiles


class SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the listed modules' sources ahead of every other finder."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(fullname, source)


def recorded(root: Path) -> dict[str, str]:
    """The build's record: module -> its source's SHA-256; empty when there is none."""
    try:
        data = json.loads((root / "smtp_balancer" / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def compiled_modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every compiled module under these packages (an extension beside a .py) -> its source."""
    found: dict[str, Path] = {}
    for package in packages:
        for extension in (root / package).rglob("*.so"):
            source = extension.parent / (extension.name.split(".", 1)[0] + ".py")
            if source.exists():
                found[".".join(source.relative_to(root).with_suffix("").parts)] = source
    return found


def audit(root: Path, packages: Iterable[str] = PACKAGES) -> tuple[dict[str, Path], list[str], list[str]]:
    """(every compiled module -> its source, those of the build's record whose source
    differs or whose compiled file is gone, those the record does not list: left over
    from an older build)."""
    record = recorded(root)
    modules = compiled_modules(root, packages)
    changed, unrecorded = [], []
    for module, source in sorted(modules.items()):
        if module not in record:
            unrecorded.append(module)
        elif record[module] != hashlib.sha256(source.read_bytes()).hexdigest():
            changed.append(module)
    if modules:
        # a module of the build whose extension is gone (deleted by hand) would run as
        # Python beside compiled modules that call its compiled twin directly: changed
        for module in sorted(set(record) - set(modules)):
            if root.joinpath(*module.split(".")).with_suffix(".py").exists():
                changed.append(module)
    return modules, changed, unrecorded


def guard(root: Path) -> list[str]:
    """The compiled modules in use: the build's, or none when one of them differs from its
    source (then every one is imported from its source). Leftovers of an older build,
    which the current build's modules never call, are imported from their sources."""
    modules, changed, unrecorded = audit(root)
    if changed:
        sys.meta_path.insert(0, SourceFirst(modules))
        listed = ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
        print(
            f"smtp-balancer: {len(changed)} compiled module(s) differ from their sources or lost their"
            f" compiled file ({listed}):"
            " every module runs as Python until make install compiles them again",
            file=sys.stderr,
        )
        return []
    if unrecorded:
        sys.meta_path.insert(0, SourceFirst({m: modules[m] for m in unrecorded}))
        print(
            f"smtp-balancer: {', '.join(unrecorded)}: compiled by an older build, run as Python;"
            " delete their .so files",
            file=sys.stderr,
        )
    return sorted(set(modules) - set(unrecorded))
