"""The build: everything is in pyproject.toml but the compiled modules.

The modules every message passes through (the decision model, the log lines,
replay's simulation, the policy daemon's request path) are compiled to C with
mypyc, from the same typed sources (figures in BENCHMARKS.md). With
SB_PURE_PYTHON=1, or when the compile fails, the install is pure Python and
works the same, slower.

`make install` (.ci/install) builds them twice, profile-guided: first with GCC's
instrumentation (SB_PGO=generate), then, after a training run that feeds the
policy daemon's request path Postfix's requests (.ci/pgo_train.py), from the
branch counts it wrote (SB_PGO=use). Code the training did not run is compiled
as without a profile. Without SB_PGO the build is the plain one.

Each compiled module is recorded with its source's SHA-256 in
smtp_balancer/compiled.json; smtp_balancer/native.py imports the compiled modules
only while every source still matches, so an edited or updated checkout never
runs stale compiled code.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
MANIFEST = "smtp_balancer/compiled.json"
# the branch counts of a profile-guided build (SB_PGO), and where its objects are made: GCC
# names a module's counts by its object's path, which must be the same in both builds
PGO_DIR = ROOT / "build" / "pgo"
PGO_TEMP = ROOT / "build" / "pgo-objects"

# modules on the per-message path; each must type-check (mypy) to compile
# (docs/development.md: what is left out, and why)
COMPILED = [
    *sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "smtp_balancer" / "decision").glob("*.py")
        if p.name != "__init__.py"
    ),
    "smtp_balancer/replay/hits.py",
    "smtp_balancer/replay/inputs.py",
    "smtp_balancer/replay/order.py",
    "smtp_balancer/replay/period.py",
    "smtp_balancer/replay/replies.py",
    "smtp_balancer/replay/simulate.py",
    "smtp_balancer/observe/decision_log.py",
    "smtp_balancer/observe/logfmt.py",
    "smtp_balancer/observe/lines.py",
    "smtp_balancer/observe/log_reader.py",
    "smtp_balancer/feedback/delivery_log.py",
    "smtp_balancer/feedback/dialects.py",
    "smtp_balancer/engine/core.py",
    "smtp_balancer/engine/giveback.py",
    "smtp_balancer/engine/holds.py",
    "smtp_balancer/state/live.py",
    "smtp_balancer/state/values.py",
    "policyd/protocol.py",
    "policyd/session.py",
    "policyd/connection.py",
    "policyd/transport.py",
    "policyd/server.py",
    "smtp_balancer/observe/metrics.py",
    "smtp_balancer/observe/tally.py",
    "smtp_balancer/clock.py",
]


def module_of(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class BuildExt(build_ext):
    """Builds what it can (each extension is optional: no compiler means pure
    Python), then records the modules it compiled and their sources' hashes."""

    def run(self) -> None:
        self.failed: list[str] = []
        if pgo_mode():
            self.build_temp = str(PGO_TEMP)  # pip's is a fresh temporary directory each time
        super().run()
        compiled = {module_of(p): p for p in COMPILED}
        # the modules' shims import one shared library: all of them built, or none is used
        # (a file an earlier build left does not count)
        complete = not self.failed and all(
            os.path.exists(self.get_ext_fullpath(ext.name)) for ext in self.extensions
        )
        names = [ext.name for ext in self.extensions if ext.name in compiled] if complete else []
        built = {name: source_hash(ROOT / compiled[name]) for name in names}
        target = ROOT / MANIFEST if self.inplace else Path(self.build_lib) / MANIFEST
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(built, indent=1, sort_keys=True) + "\n")
        if self.extensions and not complete:
            print(
                "smtp-balancer: the compiled modules could not be built; everything runs as Python"
                " (compiling needs a C compiler and Python's headers: gcc, python3-dev)",
                file=sys.stderr,
            )

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:  # an optional extension's failure is only a warning: noted here
            self.failed.append(ext.name)
            raise


def pgo_mode() -> str:
    mode = os.environ.get("SB_PGO", "")
    if mode not in ("", "generate", "use"):
        raise SystemExit(f"SB_PGO={mode!r}: expected generate, use or nothing")
    return mode


def pgo_flags() -> tuple[list[str], list[str]]:
    """Compiler and linker flags for SB_PGO (GCC's)."""
    mode = pgo_mode()
    if mode == "generate":
        # atomic: the milter decides in threads of its own
        generate = f"-fprofile-generate={PGO_DIR}"
        return [generate, "-fprofile-update=atomic"], [generate]
    if mode == "use":
        # a function the training never ran is compiled as it would be without a profile
        use = [f"-fprofile-use={PGO_DIR}", "-fprofile-partial-training", "-Wno-missing-profile"]
        # mypyc compiles with -Werror: no note about the profile may fail the build
        return [*use, "-Wno-error"], []
    return [], []


def ext_modules() -> list:
    if os.environ.get("SB_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("smtp-balancer: mypy (mypyc) not installed; installing pure Python", file=sys.stderr)
        return []
    os.chdir(ROOT)  # mypyc names modules by their paths from here
    try:
        # errors only in the compiled modules: the rest (and third-party code) is read for types
        extensions = mypycify(
            ["--ignore-missing-imports", "--follow-imports=silent", *COMPILED], opt_level="3"
        )
    except (Exception, SystemExit) as exc:  # a type error: the install goes on, as Python
        print(f"smtp-balancer: not compiled ({exc}); installing pure Python", file=sys.stderr)
        return []
    cflags, ldflags = pgo_flags()
    for ext in extensions:
        ext.extra_compile_args = [*ext.extra_compile_args, *cflags]
        ext.extra_link_args = [*ext.extra_link_args, *ldflags]
        ext.optional = True  # a failed compile does not fail the install (BuildExt records none)
    return extensions


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildExt})
