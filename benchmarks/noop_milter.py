"""The milter benchmark's baseline: pymilter and libmilter doing nothing of ours.

It negotiates the same callbacks as our milter (connect, MAIL, RCPT and headers
without replies, no body) and accepts at end of message, so the gap between it
and plain Postfix is the price of any pymilter milter on this machine, and the
gap between it and ours is our own code.

Usage: python benchmarks/noop_milter.py unix:/path/to/socket
"""

from __future__ import annotations

import os
import sys
from typing import Any

import Milter


class NoopMilter(Milter.Base):
    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, to: str, *params: str) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        return Milter.CONTINUE

    @Milter.nocallback
    def body(self, chunk: bytes) -> int:
        return Milter.CONTINUE

    def eom(self) -> int:
        return Milter.ACCEPT


def main(socket: str) -> None:
    Milter.factory = NoopMilter
    Milter.set_flags(Milter.ADDHDRS + Milter.CHGHDRS)
    os.umask(0o111)  # as ours (socket_mode 0666): postfix must connect
    Milter.runmilter("noop", socket, 30)


if __name__ == "__main__":
    main(sys.argv[1])
