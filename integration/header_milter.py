"""A milter that records the headers it is given, for the milter-chain test: run after
ours in smtpd_milters, it stands for a DKIM signer and shows what a signer would sign.

Usage: python integration/header_milter.py unix:/path/to/socket RECORD_FILE
Each message's headers are appended to RECORD_FILE as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import Milter


class Recorder(Milter.Base):
    record = ""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []

    @Milter.noreply
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.headers = []
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        self.headers.append((name, value))
        return Milter.CONTINUE

    def eom(self) -> int:
        with open(self.record, "a") as f:
            f.write(json.dumps(self.headers) + "\n")
        return Milter.ACCEPT

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        return Milter.CONTINUE


def main(socket: str, record: str) -> None:
    Recorder.record = record
    Milter.factory = Recorder
    os.umask(0o111)  # postfix must connect
    Milter.runmilter("recorder", socket, 30)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
