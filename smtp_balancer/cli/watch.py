"""`status --watch`: the status screen redrawn every N seconds, with what the last
minute delivered per endpoint and provider, until q or Ctrl-C."""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from collections.abc import Callable

from smtp_balancer.cli.report import table
from smtp_balancer.state.outcomes import MinuteOutcomes

CLEAR = "\x1b[H\x1b[2J"


def rates_section(rows: list[MinuteOutcomes], minute: str) -> str:
    if not rows:
        return f"\nlast minute ({minute[8:10]}:{minute[10:]} UTC): no outcomes counted"
    table_rows = [["ENDPOINT", "PROVIDER", "SENT", "DEFERRED", "BOUNCED"]]
    table_rows += [[r.endpoint, r.provider, str(r.sent), str(r.deferred), str(r.bounced)] for r in rows]
    title = f"\nlast minute ({minute[8:10]}:{minute[10:]} UTC), as the feedback daemons count:"
    return "\n".join([title, *table(table_rows)])


def watch(screen: Callable[[], str], every_s: float) -> int:
    """Redraw ``screen()`` every ``every_s`` until q (or Ctrl-C); the terminal is put back."""
    fd = sys.stdin.fileno()
    interactive = os.isatty(fd)
    saved = termios.tcgetattr(fd) if interactive else None
    try:
        if interactive:
            tty.setcbreak(fd)  # a key without Enter, no echo
        while True:
            sys.stdout.write(f"{CLEAR}{screen()}\n\nrefreshed every {every_s:g}s; q quits\n")
            sys.stdout.flush()
            ready, _, _ = select.select([fd] if interactive else [], [], [], every_s)
            if ready and os.read(fd, 1) in (b"q", b"Q"):
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
