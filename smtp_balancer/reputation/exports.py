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
- Google Postmaster Tools API v2, ``domains.domainStats.query`` (a
  ``QueryDomainStatsResponse``: ``{"domainStats": [...], "nextPageToken": ...}``, or
  a JSON array of such pages): each ``DomainStat`` has ``name``
  (``domains/{domain}/domainStats/{opaque id}``), ``metric`` (the name the query
  gave the metric: ours are the ``StandardMetric`` names, SPAM_RATE and so on),
  ``value`` (a ``StatisticValue``: one of ``doubleValue``, ``floatValue``,
  ``intValue`` as a string, ``stringValue``, ``stringList``) and ``date``
  (``{year, month, day}``, with DAILY granularity); ``domainStats.batchQuery``
  (``{"results": [{"response": ...} or {"error": ...}]}``) holds one such response
  per domain. And ``domains.getComplianceStatus``
  (``name`` ``domains/{domain}/complianceStatus``; ``complianceData`` and
  ``subdomainComplianceData``, each with ``domainId``, ``rowData[]``,
  ``oneClickUnsubscribeVerdict`` and ``honorUnsubscribeVerdict``, a ``status`` and a
  ``reason`` each). Reference:
  https://developers.google.com/workspace/gmail/postmaster/reference/rest/v2/QueryDomainStatsResponse
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
import math
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


# -- Google Postmaster Tools ----------------------------------------------------------
def postmaster(text: str, skipped: Skipped, today: date) -> tuple[str, list[Observation]]:
    """Any Postmaster Tools response, told by its shape: (postmaster-v1 or
    postmaster-v2, what it says). ``today``: the day of a compliance status, which
    carries none."""
    data = _json(text)
    if _is_v2(data):
        return "postmaster-v2", _v2(data, skipped, today)
    return "postmaster-v1", _v1(data, skipped)


def postmaster_v1(text: str, skipped: Skipped) -> list[Observation]:
    """A ``trafficStats`` get or list response."""
    return _v1(_json(text), skipped)


def postmaster_v2(text: str, skipped: Skipped, today: date) -> list[Observation]:
    """A ``domainStats.query`` response (or a list of its pages), or a compliance status."""
    data = _json(text)
    if not _is_v2(data):
        raise ExportError("neither a domainStats query response nor a compliance status")
    return _v2(data, skipped, today)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ExportError(f"not JSON: {exc}") from exc


# -- API v1: trafficStats ---------------------------------------------------------------
def _v1(data: Any, skipped: Skipped) -> list[Observation]:
    if isinstance(data, dict) and "trafficStats" in data:
        items = data["trafficStats"]
        if not isinstance(items, list):
            raise ExportError("trafficStats is not a list")
    elif isinstance(data, dict) and "name" in data:
        items = [data]
    else:
        raise ExportError(
            "neither a TrafficStats object nor a trafficStats list (v1), nor a domainStats"
            " query response or a compliance status (v2)"
        )
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


# -- API v2: domainStats and complianceStatus ------------------------------------------
_V2_NAME = re.compile(r"^domains/([A-Za-z0-9.-]{1,253})/domainStats/[^/]{1,200}$")
_V2_COMPLIANCE = re.compile(r"^domains/([A-Za-z0-9.-]{1,253})/complianceStatus$")
# StandardMetric names; the longer first where one begins another
STANDARD_METRICS = (
    "FEEDBACK_LOOP_SPAM_RATE",
    "FEEDBACK_LOOP_ID",
    "SPAM_RATE",
    "AUTH_SUCCESS_RATE",
    "TLS_ENCRYPTION_MESSAGE_COUNT",
    "TLS_ENCRYPTION_RATE",
    "DELIVERY_ERROR_COUNT",
    "DELIVERY_ERROR_RATE",
)
COMPLIANCE_VERDICTS = {
    "oneClickUnsubscribeVerdict": "one_click_unsubscribe",
    "honorUnsubscribeVerdict": "honor_unsubscribe",
}
_STATUS = re.compile(r"^[A-Z][A-Z_]{0,39}$")


def _is_v2(data: Any) -> bool:
    if isinstance(data, list):
        return bool(data) and all(isinstance(page, dict) and "domainStats" in page for page in data)
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("results"), list):  # a domainStats.batchQuery response
        return all(isinstance(r, dict) and ("response" in r or "error" in r) for r in data["results"])
    return (
        "domainStats" in data or "complianceData" in data or bool(_V2_COMPLIANCE.match(str(data.get("name"))))
    )


def _v2(data: Any, skipped: Skipped, today: date) -> list[Observation]:
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        pages = []
        for result in data["results"]:
            error = result.get("error")
            if error is not None:
                code = error.get("status") or error.get("code") if isinstance(error, dict) else None
                skipped.note(f"batchQuery result with an error ({str(code)[:40]})")
            elif isinstance(result.get("response"), dict) and "domainStats" in result["response"]:
                pages.append(result["response"])
            else:
                skipped.note("batchQuery result without a domainStats response")
        data = pages
    elif isinstance(data, dict) and "domainStats" not in data:
        return _compliance(data, skipped, today)
    out: list[Observation] = []
    for page in data if isinstance(data, list) else [data]:
        stats = page["domainStats"]
        if not isinstance(stats, list):
            raise ExportError("domainStats is not a list")
        for stat in stats:
            out += _domain_stat(stat, skipped)
    return out


def _domain_stat(stat: Any, skipped: Skipped) -> list[Observation]:
    if not isinstance(stat, dict):
        skipped.note("domainStats entry that is not an object")
        return []
    match = _V2_NAME.match(str(stat.get("name", "")))
    if match is None:
        skipped.note("domainStats entry without a domains/{domain}/domainStats/{id} name")
        return []
    day = _v2_date(stat.get("date"))
    if day is None:
        skipped.note("domainStats entry without a date (query with aggregationGranularity DAILY)")
        return []
    metric = str(stat.get("metric", ""))
    standard, subject = _standard_metric(metric)
    if standard is None:
        skipped.note("domainStats metric not named by a StandardMetric (name your metrics SPAM_RATE, ...)")
        return []
    if standard == "FEEDBACK_LOOP_ID":
        return []  # the ids alone: FEEDBACK_LOOP_SPAM_RATE says what they did
    number = _v2_number(stat.get("value"))
    if number is None:
        skipped.note(f"domainStats {standard} without a number")
        return []
    domain = match.group(1).lower()
    if standard in ("SPAM_RATE", "FEEDBACK_LOOP_SPAM_RATE"):
        if not 0 <= number <= 1:
            skipped.note(f"domainStats {standard} that is not a ratio from 0 to 1")
            return []
        if standard == "SPAM_RATE":
            return [Observation("postmaster", day, "spam_ratio", f"{number:g}", domain=domain, detail="v2")]
        if not subject:
            skipped.note("domainStats FEEDBACK_LOOP_SPAM_RATE without a feedback loop id in its name")
            return []
        return [
            Observation("postmaster", day, "fbl_spam_ratio", f"{number:g}", domain=domain, subject=subject)
        ]
    # AUTH_SUCCESS_RATE_DKIM -> auth_success_rate_dkim: kept and shown, acted on by no rule
    signal = re.sub(r"[^a-z0-9_]", "_", (standard + ("_" + subject if subject else "")).lower())
    return [Observation("postmaster", day, signal[:60], f"{number:g}", domain=domain)]


def _standard_metric(metric: str) -> tuple[str | None, str]:
    """(the StandardMetric a query's metric name begins with, what follows it): the
    name says what a metric is, as the query named it (``SPAM_RATE``,
    ``AUTH_SUCCESS_RATE_DKIM``, ``FEEDBACK_LOOP_SPAM_RATE:campaign-id``)."""
    upper = metric.strip().upper().replace("-", "_")
    for standard in STANDARD_METRICS:
        if upper == standard:
            return standard, ""
        if upper.startswith(standard) and upper[len(standard)] in "_:./ ":
            return standard, metric.strip()[len(standard) + 1 :][:200]
    return None, ""


def _v2_date(value: Any) -> date | None:
    if not isinstance(value, dict):
        return None
    try:
        return date(int(value["year"]), int(value["month"]), int(value["day"]))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def _v2_number(value: Any) -> float | None:
    """A StatisticValue's number: doubleValue, floatValue, or intValue (an int64 as a string)."""
    if not isinstance(value, dict):
        return None
    for name in ("doubleValue", "floatValue"):
        number = value.get(name)
        if isinstance(number, int | float) and not isinstance(number, bool) and math.isfinite(number):
            return float(number)
    text = value.get("intValue")
    if isinstance(text, str | int) and not isinstance(text, bool) and str(text).lstrip("-").isdecimal():
        return float(int(str(text)[:19]))
    return None


def _compliance(data: dict[str, Any], skipped: Skipped, today: date) -> list[Observation]:
    match = _V2_COMPLIANCE.match(str(data.get("name", "")))
    out: list[Observation] = []
    for part in ("complianceData", "subdomainComplianceData"):
        body = data.get(part)
        if body is None:
            continue
        domain = str(body.get("domainId", "")) if isinstance(body, dict) else ""
        if not domain and match and part == "complianceData":
            domain = match.group(1)
        if not isinstance(body, dict) or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", domain):
            skipped.note(f"{part} without a domainId")
            continue
        rows = body.get("rowData")
        if isinstance(rows, list) and rows:
            skipped.note("compliance rowData row (its requirements are not read)", len(rows))
        for field_name, signal in COMPLIANCE_VERDICTS.items():
            verdict = body.get(field_name)
            if verdict is None:
                continue
            status = verdict.get("status") if isinstance(verdict, dict) else None
            if not isinstance(status, str) or not _STATUS.match(status):
                skipped.note(f"{field_name} without a status")
                continue
            reason = verdict.get("reason")
            detail = reason[:200] if isinstance(reason, str) else ""
            out.append(Observation("postmaster", today, signal, status, domain=domain.lower(), detail=detail))
    if not out and match is None and "complianceData" not in data:
        raise ExportError("not a compliance status: no complianceData")
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
