"""docs/security.md's ``ACL SETUSER`` lines, the one parser of them: the ACL test runs
every part as its user, and unit tests run a part's Redis calls as the same user."""

from __future__ import annotations

import shlex
from pathlib import Path

SECURITY_PAGE = Path(__file__).resolve().parents[1] / "docs" / "security.md"


def security_page_acl_lines() -> dict[str, list[str]]:
    """Each ``ACL SETUSER`` line of the page, split as redis-cli would, by user."""
    lines = [line for line in SECURITY_PAGE.read_text().splitlines() if line.startswith("ACL SETUSER ")]
    return {shlex.split(line)[2]: shlex.split(line) for line in lines}


def password_of(words: list[str]) -> str:
    return next(w[1:] for w in words if w.startswith(">"))


ACL = security_page_acl_lines()
