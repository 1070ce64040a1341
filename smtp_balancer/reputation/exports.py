"""The providers' reputation exports -> observations. Sans I/O.

Three files, shaped as the providers publish them:

- Google Postmaster Tools API v1, ``domains.trafficStats`` (get: one
  ``TrafficStats`` object; list: ``{"trafficStats": [...], "nextPageToken": ...}``):
  ``name`` is ``domains/{domain}/trafficStats/{yyyymmdd}``; ``ipReputations[]``
  holds one entry per category (``reputation``: HIGH, MEDIUM, LOW, BAD;
  ``ipCount``, an int64 as a string; ``sampleIps[]``); ``domainReputation``;
  ``userReportedSpamRatio`` with ``...LowerBound`` and ``...UpperBound``;
  ``spammyFeedbackLoops[]`` (``id``, ``spamRatio``); ``deliveryErrors[]``
  (``errorClass``, ``errorType``, ``errorRatio``). Reference:
  https://developers.google.com/gmail/postmaster/reference/rest/v1/domains.trafficStats
- Microsoft SNDS data export (``data.aspx``): CSV without a header, one row per IP
  and day: IP, activity start, activity end (``12/31/2019 8:00 AM``), RCPT
  commands, DATA commands, message recipients, filter result (GREEN, YELLOW,
  RED), complaint rate (``< 0.1%`` or ``1.5%``), trap message start, trap message
  end, trap hits, sample HELO, sample MAIL FROM, comments.
- Microsoft SNDS IP status (``ipStatus.aspx``): CSV without a header: first IP,
  last IP (a range), blocked (``Yes``/``No``), the reason.
  Reference: https://sendersupport.olc.protection.outlook.com/snds/FAQ.aspx

A file is never fatal: what cannot be read is counted by why (``Skipped``).
"""

from __future__ import annotations

import csv
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
CATEGORIES = ("HIGH", "MEDIUM", "LOW", "BAD")  # REPUTATION_CATEGORY_UNSPECIFIED says nothing
FILTER_RESULTS = ("GREEN", "YELLOW", "RED")
TRAFFIC_STATS_FIELDS = frozenset(
    {
        "name",
        "ipReputations",
        "domainReputation",
        "userReportedSpamRatio",
        "userReportedSpamRatioLowerBound",
        "userReportedSpamRatioUpperBound",
        "spammyFeedbackLoops",
        "spfSuccessRatio",
        "dkimSuccessRatio",
        "dmarcSuccessRatio",
        "outboundEncryptionRatio",
        "inboundEncryptionRatio",
        "deliveryErrors",
    }
)
_NAME = re.compile(r"^domains/([A-Za-z0-9.-]{1,253})/trafficStats/(\d{8})$")
SNDS_DATA_COLUMNS = 10  # a row needs at least IP .. trap hits (the samples may be cut)


@dataclass(frozen=True)
class Observation:
    """One thing a provider said about one of our IPs (``first``..``last``: a range)
    or sending domains, for one day."""

    source: str  # postmaster | snds
    day: date
    signal: (
        str  # ip_reputation, domain_reputation, spam_ratio, filter_result, complaint_rate, trap_hits, blocked
    )
    value: str  # a category (BAD, RED, yes) or a number as text
    first: IP | None = None  # the IPs it is about
    last: IP | None = None
    domain: str = ""  # or the sending domain it is about
    subject: str = ""  # within the domain: a feedback loop id
    detail: str = ""


@dataclass
class Skipped:
    """What a file held that could not be used, by why."""

    reasons: Counter[str] = field(default_factory=Counter)

    def note(self, why: str, n: int = 1) -> None:
        self.reasons[why] += n


class ExportError(ValueError):
    """The file is not the export it was given as (not JSON, not the right shape)."""


# -- Google Postmaster Tools, API v1 --------------------------------------------------
def postmaster_v1(text: str, skipped: Skipped) -> list[Observation]:
    """A ``trafficStats`` get or list response."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ExportError(f"not JSON: {exc}") from exc
    if isinstance(data, dict) and "trafficStats" in data:
        items = data["trafficStats"]
        if not isinstance(items, list):
            raise ExportError("trafficStats is not a list")
    elif isinstance(data, dict) and "name" in data:
        items = [data]
    else:
        raise ExportError("neither a TrafficStats object nor a trafficStats list")
    out: list[Observation] = []
    for item in items:
        out += _traffic_stats(item, skipped)
    return out


def _traffic_stats(item: Any, skipped: Skipped) -> list[Observation]:
    if not isinstance(item, dict):
        skipped.note("trafficStats entry that is not an object")
        return []
    match = _NAME.match(str(item.get("name", "")))
    day = _yyyymmdd(match.group(2)) if match else None
    if match is None or day is None:
        skipped.note("trafficStats entry without a domains/{domain}/trafficStats/{yyyymmdd} name")
        return []
    domain = match.group(1).lower()
    for unknown in sorted(set(item) - TRAFFIC_STATS_FIELDS):
        skipped.note(f"unknown trafficStats field {unknown[:40]!r}")
    out: list[Observation] = []
    for entry in item.get("ipReputations") or []:
        out += _ip_reputation(entry, day, domain, skipped)
    reputation = item.get("domainReputation")
    if reputation in CATEGORIES:
        out.append(Observation("postmaster", day, "domain_reputation", reputation, domain=domain))
    ratio = _ratio(item.get("userReportedSpamRatio"))
    if ratio is not None:
        low = _ratio(item.get("userReportedSpamRatioLowerBound"))
        high = _ratio(item.get("userReportedSpamRatioUpperBound"))
        bounds = f"{low:g}-{high:g}" if low is not None and high is not None else ""
        out.append(Observation("postmaster", day, "spam_ratio", f"{ratio:g}", domain=domain, detail=bounds))
    for loop in item.get("spammyFeedbackLoops") or []:
        spam = _ratio(loop.get("spamRatio")) if isinstance(loop, dict) else None
        if spam is None or not isinstance(loop.get("id"), str):
            skipped.note("spammyFeedbackLoops entry without id and spamRatio")
            continue
        out.append(
            Observation(
                "postmaster", day, "fbl_spam_ratio", f"{spam:g}", domain=domain, subject=loop["id"][:200]
            )
        )
    return out


def _ip_reputation(entry: Any, day: date, domain: str, skipped: Skipped) -> list[Observation]:
    if not isinstance(entry, dict) or entry.get("reputation") not in (
        *CATEGORIES,
        "REPUTATION_CATEGORY_UNSPECIFIED",
    ):
        skipped.note("ipReputations entry without a known reputation")
        return []
    category = entry["reputation"]
    if category == "REPUTATION_CATEGORY_UNSPECIFIED":
        return []
    out = []
    samples = entry.get("sampleIps") or []
    for text in samples if isinstance(samples, list) else []:
        ip = _ip(text)
        if ip is None:
            skipped.note("sampleIps entry that is not an IP address")
            continue
        count = str(entry.get("ipCount", ""))
        out.append(
            Observation(
                "postmaster",
                day,
                "ip_reputation",
                category,
                ip,
                ip,
                domain,
                f"one of {count} IPs" if count else "",
            )
        )
    return out


# -- Microsoft SNDS ---------------------------------------------------------------------
def snds_data(lines: Iterable[str], skipped: Skipped) -> Iterator[Observation]:
    """The data export: per IP and day, the filter result, complaint rate and trap hits."""
    for row in _rows(lines):
        if len(row) < SNDS_DATA_COLUMNS:
            skipped.note("SNDS data row with fewer than 10 columns")
            continue
        ip, start = _ip(row[0]), _snds_time(row[1])
        if ip is None or start is None:
            skipped.note("SNDS data row without an IP address and an activity start")
            continue
        day = start.date()
        verdict = row[6].strip().upper()
        if verdict in FILTER_RESULTS:
            yield Observation("snds", day, "filter_result", verdict, ip, ip)
        else:
            skipped.note("SNDS data row with an unknown filter result")
        rate = _snds_percent(row[7])
        if rate is not None:
            yield Observation("snds", day, "complaint_rate", f"{rate:g}", ip, ip, detail=row[7].strip()[:20])
        traps = row[10].strip() if len(row) > 10 else ""
        if traps.isdigit() and len(traps) < 10:
            yield Observation("snds", day, "trap_hits", str(int(traps)), ip, ip)


def snds_status(lines: Iterable[str], skipped: Skipped, day: date) -> Iterator[Observation]:
    """The IP status export: blocked ranges (it carries no date: ``day`` is the import's)."""
    for row in _rows(lines):
        if len(row) < 3:
            skipped.note("SNDS IP status row with fewer than 3 columns")
            continue
        first, last = _ip(row[0]), _ip(row[1])
        if first is None or last is None or first.version != last.version or last < first:  # type: ignore[operator]
            skipped.note("SNDS IP status row without a first and last IP address")
            continue
        blocked = row[2].strip().lower()
        if blocked not in ("yes", "no"):
            skipped.note("SNDS IP status row with blocked neither Yes nor No")
            continue
        detail = row[3].strip()[:200] if len(row) > 3 else ""
        yield Observation("snds", day, "blocked", blocked, first, last, detail=detail)


# -- values -----------------------------------------------------------------------------
def _rows(lines: Iterable[str]) -> Iterator[list[str]]:
    for row in csv.reader(line.replace("\x00", "") for line in lines):
        if row and any(cell.strip() for cell in row):
            yield row


def _ip(text: Any) -> IP | None:
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        return None


def _yyyymmdd(text: str) -> date | None:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def _snds_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text.strip(), "%m/%d/%Y %I:%M %p")
    except ValueError:
        return None


def _snds_percent(text: str) -> float | None:
    """``< 0.1%`` -> 0.1 (an upper bound, taken as itself), ``1.5%`` -> 1.5."""
    match = re.fullmatch(r"\s*<?\s*(\d{1,3}(?:\.\d+)?)\s*%\s*", text)
    return float(match.group(1)) if match else None


def _ratio(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= 1 else None
