"""logfmt rendering, sans I/O: values, keys, and the lines of events whose fields
repeat (a decision line per message). Compiled (setup.py); the logging classes
that use it are in logs.py.

Every value is escaped: a reply text, a garbage log line or a client's address
can never start a new log line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

_BARE: Final = re.compile(r"[A-Za-z0-9_.:/@+-]+")
_QUOTABLE: Final = re.compile(r'[^"\\\x00-\x1f\x7f]*')  # needs quotes only, no escapes
_KEY_JUNK: Final = re.compile(r"[^A-Za-z0-9_.-]")


def logfmt_value(value: Any) -> str:
    # a decision line per message: the common types take the short paths
    if value is None:
        return '""'
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int or type(value) is float:
        return str(value)  # digits, ".", "e", "+", "-", "inf", "nan": bare, as _BARE says
    return logfmt_text(value if type(value) is str else str(value))


# Rendered short texts. A decision line repeats most of its values (rule, pool,
# endpoint, reason, action); cleared when full, so unique ids cannot grow it.
_texts: Final[dict[str, str]] = {}
TEXTS_MAX: Final = 4096
TEXT_CACHED_LEN: Final = 200


def logfmt_text(text: str) -> str:
    if text.isascii() and text.isalnum():  # ids, queue ids: bare, and never cached
        return text
    rendered = _texts.get(text)
    if rendered is None:
        rendered = render_text(text)
        if len(text) <= TEXT_CACHED_LEN:
            if len(_texts) >= TEXTS_MAX:
                _texts.clear()
            _texts[text] = rendered
    return rendered


def render_text(text: str) -> str:
    if _BARE.fullmatch(text):  # never matches "": an empty value is quoted
        return text
    if _QUOTABLE.fullmatch(text):
        return f'"{text}"'
    # quoted, with backslash, quote and every control character escaped
    return json.dumps(text, ensure_ascii=False)


HEAD: Final = frozenset(("ts", "level", "logger", "msg"))  # every line's first fields

# Fields that repeat from line to line, as (key, value) pairs: hashable, so their
# rendering is cached (cleared when full, like _texts). A key's values keep one type:
# True == 1 == 1.0 as cache keys, so a key that took both would render one as the other.
Tail = tuple[tuple[str, Any], ...]
_tails: Final[dict[Tail, tuple[frozenset[str] | None, str]]] = {}  # its keys (None: one of HEAD), its text
TAILS_MAX: Final = 4096


def render_pairs(pairs: Iterable[tuple[str, Any]]) -> str:
    return " ".join([f"{logfmt_key(k)}={logfmt_value(v)}" for k, v in pairs])


def rendered_tail(tail: Tail) -> tuple[frozenset[str] | None, str]:
    try:
        cached = _tails.get(tail)
    except TypeError:  # an unhashable value: the uncached way
        return None, ""
    if cached is None:
        keys = frozenset(k for k, _ in tail)
        cached = (keys if HEAD.isdisjoint(keys) else None, render_pairs(tail))
        if len(_tails) >= TAILS_MAX:
            _tails.clear()
        _tails[tail] = cached
    return cached


_keys: Final[dict[str, str]] = {}


def logfmt_key(key: str) -> str:
    clean = _keys.get(key)
    if clean is None:
        clean = _KEY_JUNK.sub("_", key) or "_"
        if len(_keys) < 1024:  # field names are few; never grow without bound
            _keys[key] = clean
    return clean


_MILLIS: Final = [f"{ms:03d}+00:00" for ms in range(1000)]  # a format spec costs more than the rest


class Stamper:
    """ISO 8601 UTC with milliseconds; the seconds part is formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{_MILLIS[min(int((created - second) * 1000), 999)]}"


def event_line(
    stamp: str,
    level: str,
    name: str,
    msg: str,
    extra: dict[str, Any],
    tail: Tail,
    extra_text: str | None = None,
) -> str | None:
    """An event's logfmt line, ``tail``'s fields after ``extra``'s, the tail rendered
    once for all lines that repeat it; None when a key is twice or one of the head's
    (the caller names them as its formatter does). ``extra_text``: ``extra`` rendered
    already, as ``render_pairs`` renders it."""
    keys, rendered = rendered_tail(tail)
    if keys is None or not keys.isdisjoint(extra) or not HEAD.isdisjoint(extra):
        return None
    if extra:
        body = render_pairs(extra.items()) if extra_text is None else extra_text
        rendered = f"{body} {rendered}" if rendered else body
    head = f"ts={stamp} level={logfmt_text(level)} logger={logfmt_text(name)} msg={logfmt_text(msg)}"
    return f"{head} {rendered}" if rendered else head
