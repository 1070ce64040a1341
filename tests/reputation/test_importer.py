"""``reputation import`` against real Redis: the exports become records and actions;
importing again changes nothing; bad and huge files are a message or a count."""

from __future__ import annotations

import shutil
import tracemalloc
from datetime import date
from pathlib import Path

from integration.configs import topology
from smtp_balancer.config import validate_config
from smtp_balancer.reputation.importer import MAX_JSON_BYTES, import_files, kind_of
from smtp_balancer.state.keys import KeySchema

FIXTURES = Path(__file__).parent / "fixtures"
FILES = [
    FIXTURES / n
    for n in (
        "postmaster_v1_list.json",
        "snds_data.csv",
        "snds_status.csv",
        "postmaster_v2_query.json",
        "postmaster_v2_compliance.json",
    )
]
TODAY = date(2026, 12, 5)
KEYS = KeySchema()


def config(redis_url: str):
    return validate_config(
        {"mx_lookup": {"enabled": False}, **topology(), "redis": {"url": redis_url}, "tenants": ["shop.test"]}
    )


def snapshot(rdb) -> dict[str, tuple[bytes, int]]:
    return {k: (rdb.dump(k), rdb.pexpiretime(k)) for k in sorted(rdb.scan_iter("*"))}


def test_the_exports_suspend_the_routes_they_condemn_and_name_the_record(rdb, redis_server):
    result = import_files(FILES, None, config(redis_server.url), rdb, TODAY)
    assert result.errors == [] and dict(result.kinds) == {
        "postmaster-v1": 1,
        "snds-data": 1,
        "snds-status": 1,
        "postmaster-v2": 2,
    }
    assert rdb.get(KEYS.suspension("out2", "google")).startswith(
        "reputation rule google-ip-bad: postmaster ip_reputation BAD for 127.0.0.3 (out2) on 2026-12-05"
    )
    assert rdb.get(KEYS.suspension("out2", "microsoft")).startswith(
        "reputation rule snds-red: snds filter_result RED for 127.0.0.3 (out2) on 2026-12-05"
    )
    assert {(a["rule"], a["outcome"]) for a in result.actions} == {
        ("google-ip-bad", "acted"),
        ("snds-red", "acted"),
        ("snds-blocked", "in_force"),  # the same route, suspended a moment before
        ("google-spam-rate-hold", "acted"),  # shop.test's 0.41% on 5 December (v1; v2 says the same)
    }
    assert not rdb.exists(KEYS.suspension("out1", "google"), KEYS.suspension("out1", "microsoft"))
    assert (
        rdb.hget(KEYS.reputation("out1", "google"), "postmaster:ip_reputation:127.0.0.2") == "2026-12-05 HIGH"
    )
    spam = rdb.hget(KEYS.domain_reputation("shop.test", "google"), "postmaster:spam_ratio")
    assert spam == "2026-12-05 0.0041 0.0035-0.0047"  # v2's same day and value changed nothing
    assert rdb.get(KEYS.tenant_hold("shop.test")) == (
        "reputation rule google-spam-rate-hold: postmaster spam_ratio 0.0041 for shop.test on 2026-12-05"
    )
    assert rdb.ttl(KEYS.tenant_hold("shop.test")) > 86_000
    unsub = rdb.hget(KEYS.domain_reputation("shop.test", "google"), "postmaster:honor_unsubscribe")
    assert unsub == "2026-12-05 NEEDS_WORK unsubscribe requests are not honoured within 2 days"
    assert result.skipped.reasons["postmaster ip_reputation about an IP no endpoint sends from"] == 2


def test_importing_the_same_files_again_changes_nothing(rdb, redis_server):
    cfg = config(redis_server.url)
    import_files(FILES, None, cfg, rdb, TODAY)
    before = snapshot(rdb)
    again = import_files(FILES, None, cfg, rdb, TODAY)
    assert again.changed == 0 and again.actions == []
    assert snapshot(rdb) == before


def test_an_older_export_after_a_newer_one_changes_nothing(rdb, redis_server, tmp_path):
    cfg = config(redis_server.url)
    import_files(FILES[:1], None, cfg, rdb, TODAY)
    older = tmp_path / "older.json"
    older.write_text(
        '{"name": "domains/shop.test/trafficStats/20261204",'
        ' "ipReputations": [{"reputation": "HIGH", "ipCount": "1", "sampleIps": ["127.0.0.3"]}]}'
    )
    result = import_files([older], None, cfg, rdb, TODAY)
    assert result.records == 1 and result.changed == 0
    assert (
        rdb.hget(KEYS.reputation("out2", "google"), "postmaster:ip_reputation:127.0.0.3") == "2026-12-05 BAD"
    )


def test_a_domain_of_no_tenant_is_warned_of_or_skipped_never_held(rdb, redis_server, tmp_path):
    export = tmp_path / "v2.json"
    export.write_text(
        '{"domainStats": ['
        '{"name": "domains/news.test/domainStats/1", "metric": "SPAM_RATE", "value": {"doubleValue": 0.002},'
        ' "date": {"year": 2026, "month": 12, "day": 5}},'
        '{"name": "domains/other.test/domainStats/2", "metric": "SPAM_RATE", "value": {"doubleValue": 0.009},'
        ' "date": {"year": 2026, "month": 12, "day": 5}}]}'
    )
    result = import_files([export], None, config(redis_server.url), rdb, TODAY)
    assert [(a["rule"], a["tenant"], a["outcome"]) for a in result.actions] == [
        ("google-spam-rate-warning", "other", "warned"),
        ("google-spam-rate-hold", "other", "skipped"),
    ]
    assert result.actions[1]["reason"].endswith("; other.test is none of tenants:")
    assert not list(rdb.scan_iter(KEYS.tenant_hold_prefix() + "*"))


def test_a_move_tenant_rule_moves_the_tenants_mail_to_its_pool(rdb, redis_server):
    rule = {
        "name": "quarantine",
        "source": "postmaster",
        "signal": "spam_ratio",
        "above": 0.2,
        "action": "move_tenant",
        "pool": "main",
        "duration": "2h",
    }
    raw = {"mx_lookup": {"enabled": False}, **topology(), "redis": {"url": redis_server.url}}
    cfg = validate_config({**raw, "tenants": ["shop.test"], "reputation": {"rules": [rule]}})
    result = import_files([FIXTURES / "postmaster_v2_query.json"], None, cfg, rdb, TODAY)
    (action,) = result.actions
    assert (action["rule"], action["tenant"], action["pool"], action["outcome"]) == (
        "quarantine", "shop.test", "main", "acted",
    )  # fmt: skip
    assert rdb.get(KEYS.tenant_pool("shop.test")) == (
        "main reputation rule quarantine: postmaster spam_ratio 0.0041 for shop.test on 2026-12-05"
    )
    assert 7190 <= rdb.ttl(KEYS.tenant_pool("shop.test")) <= 7200 and not rdb.exists(
        KEYS.tenant_hold("shop.test")
    )


def test_a_record_about_a_day_after_tomorrow_is_counted_not_kept(rdb, redis_server, tmp_path):
    future = tmp_path / "future.json"
    future.write_text(
        '{"name": "domains/shop.test/trafficStats/20261209",'
        ' "ipReputations": [{"reputation": "BAD", "ipCount": "1", "sampleIps": ["127.0.0.3"]}]}'
    )
    result = import_files([future], None, config(redis_server.url), rdb, TODAY)
    assert result.records == 0 and result.actions == []
    assert result.skipped.reasons == {"record about a day after tomorrow (a wrong clock or date)": 1}
    assert not rdb.exists(KEYS.suspension("out2", "google"))


def test_a_week_old_export_is_recorded_but_acts_on_nothing(rdb, redis_server):
    result = import_files(FILES[:1], None, config(redis_server.url), rdb, date(2026, 12, 12))
    assert result.changed > 0 and result.stale > 0 and result.actions == []
    assert not rdb.exists(KEYS.suspension("out2", "google"))


def test_a_truncated_file_is_an_error_naming_it_and_the_others_still_import(rdb, redis_server, tmp_path):
    cut = tmp_path / "cut.json"
    cut.write_text((FIXTURES / "postmaster_v1_list.json").read_text()[:300])
    result = import_files(
        [cut, FILES[1], tmp_path / "missing.csv"], None, config(redis_server.url), rdb, TODAY
    )
    assert len(result.errors) == 2
    assert result.errors[0].startswith(f"{cut}: not JSON") and "No such file" in result.errors[1]
    assert rdb.exists(KEYS.suspension("out2", "microsoft"))


def test_a_gigabyte_file_is_counted_in_bounded_memory_and_a_huge_json_refused(rdb, redis_server, tmp_path):
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as f:
        f.truncate(1 << 30)  # sparse: a gigabyte of NULs, no newline
    shutil.copy(FIXTURES / "snds_data.csv", tmp_path / "ok.csv")
    tracemalloc.start()
    try:
        result = import_files([huge, tmp_path / "ok.csv"], None, config(redis_server.url), rdb, TODAY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (
        result.errors == [] and result.skipped.reasons["line longer than 64 KiB"] == 1
    )  # read past, 64 KiB at a time
    assert peak < 16 << 20, peak
    big = tmp_path / "big.json"
    with big.open("w") as f:
        f.write("{")
        f.truncate(MAX_JSON_BYTES + 1)
    result = import_files([big], None, config(redis_server.url), rdb, TODAY)
    assert result.errors == [
        f"{big}: {MAX_JSON_BYTES + 1} bytes is too large for a Postmaster Tools export (at most 64 MiB)"
    ]


def test_kinds_are_told_from_the_first_bytes():
    assert kind_of('\ufeff  {"trafficStats": []}') == "postmaster"  # v1 or v2: told once read
    assert kind_of("127.0.0.3,127.0.0.3,Yes,Blocked\r\n") == "snds-status"
    assert (
        kind_of("127.0.0.3,12/5/2026 12:00 AM,12/5/2026 11:59 PM,1,1,1,RED,< 0.1%,,,0,,,\r\n") == "snds-data"
    )
