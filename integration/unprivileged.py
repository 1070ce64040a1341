"""An ``smtp-balancer`` command line that a non-root user can run.

Postfix's pipe(8) refuses to run a command as root, so the FBL test runs
``smtp-balancer fbl`` as ``nobody``, as production runs it as a service user.
Here the venv's interpreter may live under /root (pyenv), which nobody cannot
enter; then the system python3 of the same minor version runs our code and the
venv's packages from a small launcher. Python 3.11.0-3.11.2 lack the fix that
lets redis-py use asyncio.timeout, so the launcher gives redis-py that function
under the backport's name (the fbl command uses only the synchronous client).
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
import sysconfig
from pathlib import Path

from smtp_balancer.clock import TEST_TIME_ENV

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = """\
import asyncio, sys, types
try:
    import async_timeout  # noqa: F401
except ImportError:
    sys.modules["async_timeout"] = types.SimpleNamespace(timeout=asyncio.timeout)
from smtp_balancer.cli.main import main
sys.exit(main())
"""


def runs_as(user: str, argv: list[str]) -> bool:
    probe = subprocess.run(
        [
            "setpriv",
            f"--reuid={user}",
            f"--regid={grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name}",
            "--clear-groups",
            *argv,
            "--help",
        ],
        capture_output=True,
        timeout=60,
        cwd="/",
    )
    return probe.returncode == 0


def unprivileged_cli(workdir: Path, user: str = "nobody") -> list[str]:
    """argv words that start ``smtp-balancer`` for ``user`` (append the arguments).

    They pass on the test clock (the root conftest's SMTP_BALANCER_TEST_TIME): Postfix
    gives a pipe command a clean environment, and the daemons count on that clock."""
    clock = [f"{TEST_TIME_ENV}={os.environ[TEST_TIME_ENV]}"] if os.environ.get(TEST_TIME_ENV) else []
    venv = ["/usr/bin/env", *clock, sys.executable, "-m", "smtp_balancer.cli.main"]
    if runs_as(user, venv):
        return venv
    system = "/usr/bin/python3"
    version = subprocess.run(
        [system, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=60
    ).stdout.strip()
    if version != str(sys.version_info[:2]):
        raise RuntimeError(
            f"{user} cannot run {sys.executable}, and {system} is {version}, not {sys.version_info[:2]}"
        )
    launcher = workdir / "smtp-balancer-launcher.py"
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o644)
    path = f"{REPO}:{sysconfig.get_paths()['purelib']}"
    argv = ["/usr/bin/env", *clock, f"PYTHONPATH={path}", system, str(launcher)]
    if not runs_as(user, argv):
        raise RuntimeError(f"{user} cannot run smtp-balancer through {' '.join(argv)}")
    return argv
