"""What the CLI tests share: the CLI run in-process on a config file and a clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from smtp_balancer.cli.main import main
from smtp_balancer.clock import Clock

Run = Callable[..., tuple[int, str, str]]


def cli_runner(path: str, clock: Clock, capsys: pytest.CaptureFixture[str]) -> Run:
    """``run(*args)``: ``smtp-balancer -c PATH ARGS`` on ``clock``; its exit code, stdout, stderr."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["-c", path, *args], clock=clock)
        out, err = capsys.readouterr()
        return code, out, err

    return run
