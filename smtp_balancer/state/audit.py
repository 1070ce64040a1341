"""The audit trail: every operator write through the CLI, in one bounded Redis stream.

Each entry says who (the login, and the sudo user behind it), when, what (the verb
and its target), the value before and after, and the reason given. The stream is
trimmed to AUDIT_MAX entries at each write, so it never grows without end.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import asdict, dataclass

import redis

from smtp_balancer.clock import SYSTEM, Clock
from smtp_balancer.state.keys import KeySchema
from smtp_balancer.state.values import text_of

AUDIT_MAX = 10_000  # entries kept: months of operator changes, a few MB at most
FIELDS = ("who", "sudo", "verb", "target", "old", "new", "reason")


@dataclass(frozen=True)
class AuditEntry:
    at: float  # epoch seconds
    who: str
    sudo: str  # the user who ran sudo, "" when not under sudo
    verb: str
    target: str  # an endpoint, "endpoint/provider", "pool/endpoint" or "experiment name"
    old: str
    new: str
    reason: str

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def operator() -> tuple[str, str]:
    """(login, sudo user): who runs this command."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        login = f"uid {os.getuid()}"
    return login, os.environ.get("SUDO_USER", "")


class AuditTrail:
    def __init__(self, client: redis.Redis, keys: KeySchema, clock: Clock = SYSTEM) -> None:
        self.r, self.keys, self.clock = client, keys, clock

    def record(self, verb: str, target: str, old: str, new: str, reason: str = "") -> None:
        who, sudo = operator()
        values = dict(zip(FIELDS, (who, sudo, verb, target, old, new, reason), strict=True))
        # an id from the injected clock (ms-seq): entries sort by when they were made
        entry_id = f"{int(self.clock.wall() * 1000)}-*"
        try:
            self.r.xadd(self.keys.audit(), values, id=entry_id, maxlen=AUDIT_MAX, approximate=False)
        except redis.ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise
            # a clock behind the stream's last entry (a test clock, a clock step): Redis's own id
            self.r.xadd(self.keys.audit(), values, maxlen=AUDIT_MAX, approximate=False)

    def read(self, since: float | None = None, limit: int = 1000) -> list[AuditEntry]:
        """The newest ``limit`` entries at or after ``since`` (epoch seconds), oldest first."""
        low = "-" if since is None else str(int(since * 1000))
        raw = self.r.xrevrange(self.keys.audit(), max="+", min=low, count=limit)
        return [entry for entry_id, fields in reversed(raw) if (entry := _entry(entry_id, fields))]


def _entry(entry_id: object, fields: object) -> AuditEntry | None:
    """An entry as stored; a hand-written one without our fields shows them empty."""
    ms = (text_of(entry_id) or "").split("-", 1)[0]
    if not ms.isascii() or not ms.isdigit() or not isinstance(fields, dict):
        return None
    got = {text_of(k) or "": text_of(v) or "" for k, v in fields.items()}
    return AuditEntry(int(ms) / 1000, *(got.get(name, "") for name in FIELDS))
