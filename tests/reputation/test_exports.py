"""The providers' exports, read as the providers document them.

Postmaster Tools API v1 ``domains.trafficStats`` (the field names and types of
https://developers.google.com/gmail/postmaster/reference/rest/v1/domains.trafficStats:
``name`` ``domains/{domain}/trafficStats/{yyyymmdd}``; ``ipReputations[]`` with
``reputation`` (HIGH, MEDIUM, LOW, BAD, REPUTATION_CATEGORY_UNSPECIFIED), ``ipCount``
(an int64, which JSON carries as a string) and ``sampleIps[]``; ``domainReputation``;
``userReportedSpamRatio`` and its bounds; ``spammyFeedbackLoops[]`` (``id``,
``spamRatio``); ``deliveryErrors[]``). SNDS's data and IP status CSVs, without a
header, as ``sendersupport.olc.protection.outlook.com/snds/data.aspx`` and
``ipStatus.aspx`` return them (CRLF lines; the IP status as first IP, last IP,
blocked, reason).

Postmaster Tools API v2 (the field names and types of
https://developers.google.com/workspace/gmail/postmaster/reference/rest/v2/QueryDomainStatsResponse:
``domainStats[]`` of ``DomainStat`` with ``name``
``domains/{domain}/domainStats/{domain_stat}``, ``metric`` (the query's own name for
a ``StandardMetric``), ``value`` (``StatisticValue``: ``doubleValue``,
``floatValue``, ``intValue`` as an int64 string, ``stringValue``, ``stringList``)
and ``date`` (``{year, month, day}``); ``nextPageToken``. And
``domains.getComplianceStatus``: ``name`` ``domains/{domainId}/complianceStatus``,
``complianceData`` / ``subdomainComplianceData`` with ``domainId``, ``rowData[]``,
``oneClickUnsubscribeVerdict`` and ``honorUnsubscribeVerdict`` (``status``,
``reason``))."""

from __future__ import annotations

import ipaddress
import json
import random
from datetime import date
from pathlib import Path

import pytest

from smtp_balancer.reputation.exports import (
    ExportError,
    Skipped,
    postmaster,
    postmaster_v1,
    postmaster_v2,
    snds_data,
    snds_status,
)

FIXTURES = Path(__file__).parent / "fixtures"
IP = ipaddress.ip_address


def test_a_trafficstats_list_gives_each_days_ip_and_domain_reputation():
    skipped = Skipped()
    seen = postmaster_v1((FIXTURES / "postmaster_v1_list.json").read_text(), skipped)
    ips = [(o.day, o.value, str(o.first)) for o in seen if o.signal == "ip_reputation"]
    assert ips == [
        (date(2026, 12, 3), "HIGH", "127.0.0.2"),
        (date(2026, 12, 3), "HIGH", "2001:db8::2"),
        (date(2026, 12, 3), "LOW", "127.0.0.3"),
        (date(2026, 12, 5), "HIGH", "127.0.0.2"),
        (date(2026, 12, 5), "BAD", "127.0.0.3"),
        (date(2026, 12, 5), "BAD", "192.0.2.50"),
    ]  # 4 December is missing from the export: nothing is made up for it
    domain = {(o.day, o.signal): (o.value, o.detail) for o in seen if o.domain and o.first is None}
    assert domain[(date(2026, 12, 5), "domain_reputation")] == ("LOW", "")
    assert domain[(date(2026, 12, 5), "spam_ratio")] == ("0.0041", "0.0035-0.0047")
    assert domain[(date(2026, 12, 5), "fbl_spam_ratio")] == ("0.012", "")
    (loop,) = [o for o in seen if o.signal == "fbl_spam_ratio"]
    assert loop.subject == "spring-sale:shop:bulk:s1" and loop.domain == "shop.test"
    assert skipped.reasons == {
        "sampleIps entry that is not an IP address": 1,
        "unknown trafficStats field 'newMetricGoogleAddedLater'": 1,
    }


def test_a_single_trafficstats_object_and_the_unspecified_category():
    seen = postmaster_v1((FIXTURES / "postmaster_v1_get.json").read_text(), Skipped())
    assert [(o.signal, o.value, o.domain) for o in seen] == [
        ("ip_reputation", "HIGH", "news.shop.test"),
        ("domain_reputation", "HIGH", "news.shop.test"),
    ]


@pytest.mark.parametrize(
    "text",
    ['{"trafficStats": [{"name": "domains/shop.test/trafficSt', "[1, 2]", '{"trafficStats": 7}', "\x00" * 10],
)
def test_truncated_or_foreign_json_is_an_error_naming_what_it_is_not(text: str):
    with pytest.raises(ExportError):
        postmaster_v1(text, Skipped())


def test_entries_without_a_name_or_with_junk_are_counted():
    skipped = Skipped()
    text = (
        '{"trafficStats": [7, {"name": "domains/x/trafficStats/2026-12-05"},'
        ' {"name": "domains/shop.test/trafficStats/20261205", "ipReputations": [{"reputation": "GOOD"}],'
        ' "userReportedSpamRatio": "high", "spammyFeedbackLoops": [{"id": 3}]}]}'
    )
    assert postmaster_v1(text, skipped) == []
    assert skipped.reasons == {
        "trafficStats entry that is not an object": 1,
        "trafficStats entry without a domains/{domain}/trafficStats/{yyyymmdd} name": 1,
        "ipReputations entry without a known reputation": 1,
        "spammyFeedbackLoops entry without id and spamRatio": 1,
    }


TODAY = date(2026, 12, 5)


def test_v2_domainstats_pages_give_each_days_spam_rate_and_count_what_they_cannot_use():
    skipped = Skipped()
    kind, seen = postmaster((FIXTURES / "postmaster_v2_query.json").read_text(), skipped, TODAY)
    assert kind == "postmaster-v2"
    assert [(o.domain, o.day, o.signal, o.value, o.subject) for o in seen] == [
        ("shop.test", date(2026, 12, 4), "spam_ratio", "0.0008", ""),
        ("shop.test", date(2026, 12, 5), "spam_ratio", "0.0041", ""),
        ("shop.test", date(2026, 12, 5), "auth_success_rate_dkim", "0.998", ""),
        ("shop.test", date(2026, 12, 5), "fbl_spam_ratio", "0.012", "spring-sale:shop:bulk:s1"),
        ("news.test", date(2026, 12, 5), "delivery_error_count", "17", ""),
    ]  # FEEDBACK_LOOP_ID's list of ids says nothing by itself
    assert all(o.first is None and o.source == "postmaster" for o in seen)
    assert skipped.reasons == {
        "domainStats SPAM_RATE that is not a ratio from 0 to 1": 1,
        "domainStats entry without a date (query with aggregationGranularity DAILY)": 1,
        "domainStats metric not named by a StandardMetric (name your metrics SPAM_RATE, ...)": 1,
    }


def test_v1_and_v2_side_by_side_say_the_same_days_spam_rate():
    v1 = postmaster_v1((FIXTURES / "postmaster_v1_list.json").read_text(), Skipped())
    v2 = postmaster_v2((FIXTURES / "postmaster_v2_query.json").read_text(), Skipped(), TODAY)

    def spam(seen: list) -> dict:
        return {o.day: o.value for o in seen if o.signal == "spam_ratio" and o.domain == "shop.test"}

    assert spam(v1)[TODAY] == spam(v2)[TODAY] == "0.0041"
    assert date(2026, 12, 4) in spam(v2) and date(2026, 12, 4) not in spam(v1)  # each its own missing days


def test_a_v2_compliance_status_gives_its_verdicts_on_the_import_day():
    skipped = Skipped()
    kind, seen = postmaster((FIXTURES / "postmaster_v2_compliance.json").read_text(), skipped, TODAY)
    assert kind == "postmaster-v2"
    assert [(o.domain, o.day, o.signal, o.value, o.detail) for o in seen] == [
        ("shop.test", TODAY, "one_click_unsubscribe", "COMPLIANT", ""),
        (
            "shop.test",
            TODAY,
            "honor_unsubscribe",
            "NEEDS_WORK",
            "unsubscribe requests are not honoured within 2 days",
        ),
        ("mail.shop.test", TODAY, "one_click_unsubscribe", "COMPLIANT", ""),
    ]
    assert skipped.reasons == {"compliance rowData row (its requirements are not read)": 2}


@pytest.mark.parametrize(
    "text",
    [
        '{"domainStats": 3}',
        '{"domainStats": [{"name": "domains/shop.test/domainSt',
        '[{"domainStats": []}, 5]',
        '{"trafficStats": []}',
    ],
)
def test_v2_that_is_cut_short_or_not_v2_is_an_error(text: str):
    with pytest.raises(ExportError):
        postmaster_v2(text, Skipped(), TODAY)


def test_a_compliance_status_with_no_data_says_nothing():
    assert postmaster_v2('{"name": "domains/shop.test/complianceStatus"}', Skipped(), TODAY) == []


def test_v2_entries_of_the_wrong_shape_are_counted_one_by_one():
    skipped = Skipped()
    text = (
        '{"domainStats": [7, {"name": "domains/shop.test/other/1"},'
        ' {"name": "domains/shop.test/domainStats/x", "metric": "SPAM_RATE",'
        ' "date": {"year": 2026, "month": 13, "day": 1}},'
        ' {"name": "domains/shop.test/domainStats/y", "metric": "SPAM_RATE", "value": {"doubleValue": true},'
        ' "date": {"year": 2026, "month": 12, "day": 5}},'
        ' {"name": "domains/shop.test/domainStats/z", "metric": "FEEDBACK_LOOP_SPAM_RATE",'
        ' "value": {"doubleValue": 0.1},'
        ' "date": {"year": 2026, "month": 12, "day": 5}}]}'
    )
    assert postmaster_v2(text, skipped, TODAY) == []
    assert skipped.reasons == {
        "domainStats entry that is not an object": 1,
        "domainStats entry without a domains/{domain}/domainStats/{id} name": 1,
        "domainStats entry without a date (query with aggregationGranularity DAILY)": 1,
        "domainStats SPAM_RATE without a number": 1,
        "domainStats FEEDBACK_LOOP_SPAM_RATE without a feedback loop id in its name": 1,
    }


def test_snds_data_rows_give_filter_result_complaint_rate_and_trap_hits():
    skipped = Skipped()
    with (FIXTURES / "snds_data.csv").open(newline="") as f:
        seen = list(snds_data(f, skipped))
    by_ip = {}
    for o in seen:
        by_ip.setdefault(str(o.first), {})[o.signal] = o.value
    assert by_ip["127.0.0.3"] == {"filter_result": "RED", "complaint_rate": "1.5", "trap_hits": "41"}
    assert by_ip["127.0.0.2"] == {"filter_result": "GREEN", "complaint_rate": "0.1", "trap_hits": "0"}
    assert {o.day for o in seen} == {date(2026, 12, 5)}
    assert skipped.reasons == {"SNDS data row with fewer than 10 columns": 1}


def test_snds_ip_status_ranges():
    skipped = Skipped()
    with (FIXTURES / "snds_status.csv").open(newline="") as f:
        seen = list(snds_status(f, skipped, date(2026, 12, 5)))
    assert [(str(o.first), str(o.last), o.value) for o in seen] == [
        ("127.0.0.3", "127.0.0.3", "yes"),
        ("198.51.100.0", "198.51.100.255", "yes"),
    ]
    assert seen[0].detail == "Blocked due to user complaints or other evidence of spamming"
    assert skipped.reasons == {"SNDS IP status row without a first and last IP address": 1}


def test_csv_of_the_wrong_shape_is_counted_row_by_row():
    skipped = Skipped()
    rows = ["a,b,c\r\n", "\x00\x00\x00\r\n", "127.0.0.3,not a date,x,1,1,1,RED,1%,,,0\r\n", "\r\n"]
    assert list(snds_data(rows, skipped)) == []
    assert list(snds_status(["127.0.0.3,127.0.0.3,Maybe\r\n"], skipped, date(2026, 12, 5))) == []
    assert skipped.reasons == {
        "SNDS data row with fewer than 10 columns": 1,  # the NUL line is an empty one
        "SNDS data row without an IP address and an activity start": 1,
        "SNDS IP status row with blocked neither Yes nor No": 1,
    }


def test_a_v2_batch_query_gives_each_domains_response_and_counts_the_errors():
    query = json.loads((FIXTURES / "postmaster_v2_query.json").read_text())
    batch = {
        "results": [
            {"response": query[0]},
            {
                "error": {
                    "code": 7,
                    "message": "no access to domains/other.test",
                    "status": "PERMISSION_DENIED",
                }
            },
            {"response": query[1]},
            {"response": {"nextPageToken": ""}},
        ]
    }
    skipped = Skipped()
    kind, seen = postmaster(json.dumps(batch), skipped, TODAY)
    assert kind == "postmaster-v2"
    assert [(o.domain, o.signal) for o in seen] == [
        ("shop.test", "spam_ratio"),
        ("shop.test", "spam_ratio"),
        ("shop.test", "auth_success_rate_dkim"),
        ("shop.test", "fbl_spam_ratio"),
        ("news.test", "delivery_error_count"),
    ]
    assert skipped.reasons["batchQuery result with an error (PERMISSION_DENIED)"] == 1
    assert skipped.reasons["batchQuery result without a domainStats response"] == 1


def test_a_seeded_fuzz_of_postmaster_shapes_is_read_or_refused_never_a_traceback():
    """20,000 random JSON documents built from the exports' own field names and hostile
    values (NaN, 1e308, 30-digit strings, wrong types at every level)."""
    rng = random.Random(7)
    atoms = [None, True, 0, -1, 1e308, 0.5, "x", "", "SPAM_RATE", "9" * 30, float("nan"), [], {}]
    atoms += [
        "domains/a.test/domainStats/1",
        "domains/a.test/complianceStatus",
        "domains/a.test/trafficStats/20261205",
    ]
    keys = [
        "domainStats", "results", "response", "error", "name", "metric", "value", "date", "year", "month",
        "day", "doubleValue", "intValue", "floatValue", "complianceData", "domainId", "status", "reason",
        "oneClickUnsubscribeVerdict", "rowData", "trafficStats", "ipReputations", "sampleIps", "reputation",
    ]  # fmt: skip

    def document(depth: int = 0) -> object:
        roll = rng.random()
        if depth > 5 or roll < 0.3:
            return rng.choice(atoms)
        if roll < 0.55:
            return [document(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(keys): document(depth + 1) for _ in range(rng.randint(0, 5))}

    read = 0
    for _ in range(20_000):
        try:
            postmaster(json.dumps(document()), Skipped(), TODAY)
            read += 1
        except ExportError:
            pass
    assert read > 0  # some were shaped enough to be read
