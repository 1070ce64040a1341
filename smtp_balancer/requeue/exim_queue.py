"""The Exim side of a tenant release: the frozen messages in Exim's queue (``exim
-bp``), and thawing them (``exim -Mt``). Parsing is apart from running (``frozen_in``).

A held tenant's message is frozen by the rendered DATA ACL with its route kept in
its ACL variables, so a thawed message leaves through that route at Exim's next
queue run. A release thaws every frozen message whose sender is the tenant's, as
Postfix's release does with its hold queue; the rest (a bounce Exim froze, with
its null sender; another sender's message frozen by hand) stays frozen.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

# exim -bp: "<age> <size> <id> <sender> [*** frozen ***]", the recipients on the lines after
_MESSAGE = re.compile(
    r"^\s*\S+\s+\S+\s+(?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})"
    r"\s+<(?P<sender>[^<>\s]*)>(?P<frozen>\s+\*\*\* frozen \*\*\*)?\s*$"
)
MESSAGE_ID = re.compile(r"^[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}$")
TIMEOUT_S = 120
THAW_BATCH = 500  # message ids per exim -Mt


class EximQueueError(RuntimeError):
    pass


def listed(listing: str, frozen_only: bool = True) -> list[tuple[str, str]]:
    """(message id, sender) of each (frozen) message in ``exim -bp`` output."""
    found = []
    for line in listing.splitlines():
        match = _MESSAGE.match(line)
        if match and (match["frozen"] or not frozen_only):
            found.append((match["id"], match["sender"]))
    return found


def default_binary() -> str:
    """Debian's exim4, or an exim on PATH."""
    return shutil.which("exim4") or shutil.which("exim") or "exim4"


class EximQueue:
    def __init__(self, binary: str, config_file: str | None = None) -> None:
        self.command = [binary, *(["-C", config_file] if config_file else [])]

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self.command, *argv], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EximQueueError(f"{self.command[0]} {argv[0]}: {exc}") from exc

    def frozen(self) -> list[tuple[str, str]]:
        """(message id, sender) of every frozen message in the queue."""
        return listed(self._list())

    def all(self) -> list[tuple[str, str]]:
        """(message id, sender) of every message in the queue."""
        return listed(self._list(), frozen_only=False)

    def _list(self) -> str:
        out = self._run("-bp")
        if out.returncode != 0:
            raise EximQueueError(f"exim -bp: {out.stderr.strip() or out.returncode}")
        return out.stdout

    def thaw(self, message_ids: Iterable[str]) -> set[str]:
        """``exim -Mt``: the messages are thawed; returns the ids Exim says it thawed."""
        ids = [m for m in message_ids if MESSAGE_ID.match(m)]
        thawed: set[str] = set()
        for start in range(0, len(ids), THAW_BATCH):  # a large queue: argv stays small
            out = self._run("-Mt", *ids[start : start + THAW_BATCH])
            said = set(re.findall(r"^Message (\S+) is no longer frozen$", out.stdout + out.stderr, re.M))
            if out.returncode != 0 and not said:
                raise EximQueueError(f"exim -Mt: {out.stderr.strip() or out.returncode}")
            thawed |= said
        return thawed & set(ids)
