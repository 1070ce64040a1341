"""``smtp-balancer fbl`` against a real redis-server: counts, kept files, rate rules, Redis trouble."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import redis

from integration.arf import NOT_MULTIPART, arf_report
from integration.configs import even_experiment
from smtp_balancer.cli.main import main
from smtp_balancer.clock import FixedClock
from smtp_balancer.complaints.attribute import Attributor
from smtp_balancer.complaints.intake import EX_TEMPFAIL, Intake, take_maildir, take_stdin
from smtp_balancer.complaints.store import ComplaintStore
from smtp_balancer.state.keys import KeySchema

KEYS = KeySchema()
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def intake(config, client: redis.Redis) -> Intake:
    return Intake(Attributor(config), ComplaintStore(client, config, FixedClock(NOW)), ["abuse"])


def stdin(intake: Intake, raw: bytes, keep_dir: Path, limit: int = 100_000, keep_all: bool = False) -> int:
    return take_stdin(intake, io.BytesIO(raw), limit, keep_dir, keep_all)


def test_a_complaint_is_counted_where_rates_and_metrics_read_it(make_config, rdb, tmp_path, capsys) -> None:
    config = make_config({"tenants": ["shop.test"]})
    assert stdin(intake(config, rdb), arf_report("127.0.0.3"), tmp_path / "kept") == 0
    assert rdb.hget(KEYS.outcomes("out2", "yahoo", "202701150800"), "complained") == "1"
    assert rdb.hget(KEYS.tenant_outcomes("shop.test", "2027011508"), "complained") == "1"
    totals = rdb.hgetall(KEYS.fbl_totals())
    assert totals == {"report:complaint": "1", "complaint:out2:yahoo:shop.test": "1"}
    assert not (tmp_path / "kept").exists()  # a usable report is not kept by default
    assert "complaint out2/yahoo tenant shop.test" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("raw", "result"),
    [
        (NOT_MULTIPART, "malformed"),
        (arf_report(None), "no_source_ip"),
        (arf_report("198.51.100.7"), "unattributed"),
        (arf_report().replace(b"Source-IP: 127.0.0.3", b"Source-IP: \xff\xfe"), "no_source_ip"),
    ],
)
def test_an_unusable_report_is_kept_byte_for_byte_and_counted(
    make_config, rdb, tmp_path, raw, result
) -> None:
    config = make_config()
    assert stdin(intake(config, rdb), raw, tmp_path / "kept") == 0
    kept = list((tmp_path / "kept").iterdir())
    assert len(kept) == 1 and kept[0].name.endswith("." + result) and kept[0].read_bytes() == raw
    assert kept[0].stat().st_mode & 0o777 == 0o640  # a report quotes recipients' addresses
    assert rdb.hgetall(KEYS.fbl_totals()) == {f"report:{result}": "1"}
    assert rdb.keys(KEYS.base + ":outcomes:*") == []


def test_a_huge_report_is_streamed_whole_to_a_kept_file(make_config, rdb, tmp_path) -> None:
    raw = arf_report() + b"x" * 300_000
    assert stdin(intake(make_config(), rdb), raw, tmp_path / "kept", limit=50_000) == 0
    (kept,) = (tmp_path / "kept").iterdir()
    assert kept.name.endswith(".too_large") and kept.read_bytes() == raw
    assert rdb.hgetall(KEYS.fbl_totals()) == {"report:too_large": "1"}


def test_other_feedback_types_are_read_but_not_complaints(make_config, rdb, tmp_path) -> None:
    raw = arf_report(feedback_type="not-spam")
    assert stdin(intake(make_config(), rdb), raw, tmp_path / "kept", keep_all=True) == 0
    assert rdb.hgetall(KEYS.fbl_totals()) == {"report:not_counted": "1"}
    assert [p.name.rpartition(".")[2] for p in (tmp_path / "kept").iterdir()] == ["not_counted"]


def test_a_complaint_rule_quarantines_only_past_its_minimum_sample(make_config, rdb, tmp_path) -> None:
    rule = {
        "name": "complaints",
        "measure": "complained",
        "above_percent": 0.3,
        "recover_below_percent": 0.1,
        "min_attempts": 1000,
        "window": "1h",
        "action": "quarantine",
        "duration": "6h",
    }
    config = make_config({"feedback": {"rate_rules": [rule]}})
    state = KEYS.endpoint_state("out2")
    bucket = KEYS.outcomes("out2", "yahoo", "202701150800")
    rdb.hset(bucket, "sent", 400)  # 2 complaints of 400 is 0.5%, but the sample is too small
    for _ in range(2):
        assert stdin(intake(config, rdb), arf_report("127.0.0.3"), tmp_path / "k") == 0
    assert rdb.hget(state, "state") is None
    rdb.hset(KEYS.outcomes("out2", "yahoo", "202701150759"), "sent", 600)  # 1,000 in the window
    # another provider's complaint does not count against yahoo's rate
    other = arf_report("127.0.0.3", reporter="staff@hotmail.com", rcpt_to="u@outlook.com")
    assert stdin(intake(config, rdb), other, tmp_path / "k") == 0
    assert stdin(intake(config, rdb), arf_report("127.0.0.3"), tmp_path / "k") == 0  # 0.30%: not above
    assert rdb.hget(state, "state") is None
    assert stdin(intake(config, rdb), arf_report("127.0.0.3"), tmp_path / "k") == 0  # 0.40%
    assert rdb.hget(state, "state") == "quarantined"
    assert rdb.hget(state, "by") == "feedback:complaints"
    assert rdb.hget(state, "reason").startswith("rate rule complaints: complained 0.40% of 1000 delivered")
    assert 6 * 3600 - 10 <= int(rdb.hget(state, "until")) - int(rdb.hget(state, "since")) <= 6 * 3600


def test_a_complaint_rule_can_throttle_the_endpoint_for_the_provider(make_config, rdb, tmp_path) -> None:
    rule = {
        "name": "complaint-throttle",
        "measure": "complained",
        "above_percent": 0.1,
        "recover_below_percent": 0.05,
        "min_attempts": 100,
        "window": "1h",
        "action": "throttle",
        "factor": 0.25,
        "duration": "2h",
    }
    config = make_config({"feedback": {"rate_rules": [rule]}})
    rdb.hset(KEYS.outcomes("out2", "microsoft", "202701150800"), "sent", 500)
    raw = arf_report("127.0.0.3", reporter="staff@hotmail.com", rcpt_to="u@outlook.com")
    assert stdin(intake(config, rdb), raw, tmp_path / "k") == 0
    value = rdb.get(KEYS.throttle("out2", "microsoft"))
    assert value.startswith("0.25 rate rule complaint-throttle: complained 0.20% of 500 delivered")
    assert 7190 <= rdb.ttl(KEYS.throttle("out2", "microsoft")) <= 7200


def test_redis_down_defers_a_complaint_but_keeps_an_unusable_report(make_config, tmp_path, capsys) -> None:
    config = make_config()
    dead = redis.Redis(port=1, socket_connect_timeout=0.5, decode_responses=True)
    assert stdin(intake(config, dead), arf_report("127.0.0.3"), tmp_path / "k") == EX_TEMPFAIL
    assert "the complaint waits for a retry" in capsys.readouterr().err
    assert stdin(intake(config, dead), NOT_MULTIPART, tmp_path / "k") == 0  # safe on disk
    assert [p.read_bytes() for p in (tmp_path / "k").iterdir()] == [NOT_MULTIPART]


def test_a_keep_dir_that_cannot_be_written_defers_the_report(make_config, rdb, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert stdin(intake(make_config(), rdb), NOT_MULTIPART, blocker / "kept") == EX_TEMPFAIL
    assert rdb.hgetall(KEYS.fbl_totals()) == {}


def test_a_maildir_is_read_once_and_unusable_reports_are_flagged(make_config, rdb, tmp_path) -> None:
    root = tmp_path / "Maildir"
    for d in ("new", "cur", "tmp"):
        (root / d).mkdir(parents=True)
    (root / "new" / "1.a.host").write_bytes(arf_report("127.0.0.2"))
    (root / "new" / "2.b.host").write_bytes(NOT_MULTIPART)
    config = make_config()
    assert take_maildir(intake(config, rdb), root, 100_000) == 0
    assert sorted(p.name for p in (root / "cur").iterdir()) == ["1.a.host:2,S", "2.b.host:2,FS"]
    assert list((root / "new").iterdir()) == []
    assert take_maildir(intake(config, rdb), root, 100_000) == 0  # nothing new: nothing counted twice
    assert rdb.hgetall(KEYS.fbl_totals()) == {
        "report:complaint": "1",
        "complaint:out1:yahoo:other": "1",
        "report:malformed": "1",
    }


def test_a_maildir_stays_in_new_while_redis_is_down(make_config, tmp_path) -> None:
    root = tmp_path / "Maildir"
    (root / "new").mkdir(parents=True)
    (root / "new" / "1.a.host").write_bytes(arf_report())
    dead = redis.Redis(port=1, socket_connect_timeout=0.5, decode_responses=True)
    assert take_maildir(intake(make_config(), dead), root, 100_000) == EX_TEMPFAIL
    assert [p.name for p in (root / "new").iterdir()] == ["1.a.host"]


def test_the_command_reads_stdin_and_a_maildir(make_config, rdb, tmp_path, monkeypatch, capsys) -> None:
    make_config({"feedback": {"complaints": {"keep_dir": str(tmp_path / "kept")}}})
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(arf_report("127.0.0.4"))))
    assert main(["-c", str(tmp_path / "config.yaml"), "fbl"]) == 0
    assert rdb.hget(KEYS.fbl_totals(), "complaint:out3:yahoo:other") == "1"
    assert main(["-c", str(tmp_path / "config.yaml"), "fbl", "--maildir", str(tmp_path / "none")]) == 4
    assert "is not a Maildir" in capsys.readouterr().err


def test_behind_a_pipe_a_broken_config_defers_instead_of_bouncing(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "config.yaml").write_text("endpoints: [not, a, mapping\n")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(arf_report())))
    assert main(["-c", str(tmp_path / "config.yaml"), "fbl"]) == EX_TEMPFAIL
    assert "the report waits for a retry" in capsys.readouterr().err


def test_no_mutation_of_a_report_crashes_the_judge(make_config, rdb) -> None:
    """Seeded byte flips, cuts and splices of a valid report: each gets a result."""
    import random

    from smtp_balancer.complaints.store import RESULTS

    judge = intake(make_config(), rdb).judge
    rng = random.Random(5965)
    base = arf_report()
    for _ in range(2000):
        raw = bytearray(base)
        for _ in range(rng.randint(1, 12)):
            i = rng.randrange(len(raw))
            op = rng.random()
            if op < 0.5:
                raw[i] = rng.randrange(256)
            elif op < 0.8:
                del raw[i : i + rng.randint(1, 40)]
            else:
                raw[i:i] = raw[rng.randrange(len(raw)) :][: rng.randint(1, 40)]
        outcome = judge(bytes(raw), len(raw), 100_000)
        assert outcome.result in RESULTS


def test_a_complaint_counts_in_its_message_experiment_arm(make_config, rdb, tmp_path, capsys) -> None:
    config = make_config({"experiments": [even_experiment("ab", "all", {"a": "main", "b": "main"})]})
    rdb.set(KEYS.arm_record("4Xb2Kq0Lw7z9"), "ab b")
    rdb.set(KEYS.arm_record("4Zzzzzzzzz01"), "gone x")  # hand-edited: no such experiment
    ours = "from app.test by mta.test (Postfix) with ESMTP id {} for <u1@yahoo.com>; Wed, 2 Dec 2026"
    theirs = "from mta.test by mx.yahoo.test with ESMTPS id 9yahoo9; Wed, 2 Dec 2026"
    for qid in ("4Xb2Kq0Lw7z9", "4Xb2Kq0Lw7z9", "4Zzzzzzzzz01", "4Nonenonenon"):
        raw = arf_report("127.0.0.3", received=(theirs, ours.format(qid)))
        assert stdin(intake(config, rdb), raw, tmp_path / "kept") == 0
    assert rdb.hgetall(KEYS.expstats("ab", "b")) == {"complained": "2"}
    assert rdb.ttl(KEYS.expstats("ab", "b")) > 80 * 86400
    assert not rdb.exists(KEYS.expstats("ab", "a")) and not rdb.keys(KEYS.base + ":expstats:gone:*")
    totals = rdb.hgetall(KEYS.fbl_totals())
    assert totals["report:complaint"] == "4" and totals["arm:ab:b"] == "2" and "arm:gone:x" not in totals
    out = capsys.readouterr().out
    assert out.count("; experiment ab arm b") == 2 and out.count("complaint out2/yahoo") == 4


def test_a_complaint_about_a_message_of_an_earlier_run_is_not_the_new_run(make_config, rdb, tmp_path, capsys):
    config = make_config({"experiments": [even_experiment("ab", "all", {"a": "main", "b": "main"})]})
    rdb.hset(KEYS.experiment("ab"), mapping={"state": "running", "since": "1764000000"})
    rdb.set(KEYS.arm_record("4Xb2Kq0Lw7z9"), "ab b 1763999000")  # decided before the reset
    rdb.set(KEYS.arm_record("4Xb2Kq0Lw7z8"), "ab b 1764000100")
    ours = "from app.test by mta.test (Postfix) with ESMTP id {} for <u1@yahoo.com>; Wed, 2 Dec 2026"
    for qid in ("4Xb2Kq0Lw7z9", "4Xb2Kq0Lw7z8"):
        raw = arf_report("127.0.0.3", received=(ours.format(qid),))
        assert stdin(intake(config, rdb), raw, tmp_path / "kept") == 0
    assert rdb.hgetall(KEYS.expstats("ab", "b")) == {"complained": "1"}
    out = capsys.readouterr().out
    assert out.count("complaint out2/yahoo") == 2 and out.count("; experiment ab arm b") == 1


def test_a_foreign_report_of_any_type_is_unattributed_and_kept(make_config, rdb, tmp_path) -> None:
    raw = arf_report("192.0.2.77", feedback_type="not-spam")
    assert stdin(intake(make_config(), rdb), raw, tmp_path / "kept") == 0
    assert rdb.hgetall(KEYS.fbl_totals()) == {"report:unattributed": "1"}
    (kept,) = (tmp_path / "kept").iterdir()
    assert kept.name.endswith(".unattributed") and kept.read_bytes() == raw


def _nested(depth: int) -> bytes:
    """An original whose body nests multipart/mixed ``depth`` levels deep."""
    level = 'Content-Type: multipart/mixed; boundary="b{0}"\r\n\r\n--b{0}\r\n'
    opening = "".join(level.format(i) for i in range(depth))
    closing = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    return (
        b"From: Shop <news@shop.test>\r\nTo: u1@yahoo.com\r\n"
        b"Message-ID: <deep@shop.test>\r\nMIME-Version: 1.0\r\n"
        + (opening + "Content-Type: text/plain\r\n\r\nhello" + closing).encode()
    )


def test_an_original_nested_2000_deep_is_still_a_complaint(make_config, rdb, tmp_path) -> None:
    raw = arf_report(original_message=_nested(2000))
    assert stdin(intake(make_config(), rdb), raw, tmp_path / "kept", limit=10 * 1024 * 1024) == 0
    assert rdb.hget(KEYS.fbl_totals(), "report:complaint") == "1"


def _many_parts(parts: int) -> bytes:
    """An original of ``parts`` empty MIME parts (about 12 bytes each)."""
    body = "".join("--p\r\n\r\n" for _ in range(parts)) + "--p--\r\n"
    return (
        b"From: Shop <news@shop.test>\r\nTo: u1@yahoo.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + body.encode()
    )


@pytest.mark.parametrize("where", ["original", "report"])
def test_850000_empty_parts_keep_fbl_within_four_times_the_report(make_config, tmp_path, where) -> None:
    """The command as shipped, in a process of its own: its peak RSS, against the bound."""
    import subprocess
    import sys

    make_config()
    if where == "original":
        raw = arf_report(original_message=_many_parts(850_000))
    else:  # the report's own multipart: the three parts, then 850,000 empty ones
        report = arf_report()
        boundary = report.split(b'boundary="', 1)[1].split(b'"', 1)[0]
        close = b"--" + boundary + b"--"
        raw = report.replace(close, (b"--" + boundary + b"\r\n\r\n") * 850_000 + close)
    assert len(raw) > 5_000_000
    report_file = tmp_path / "report.eml"
    report_file.write_bytes(raw)
    measure = (
        "import resource, subprocess, sys;"
        "subprocess.run(sys.argv[2:], stdin=open(sys.argv[1], 'rb'), check=True, stdout=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    cli = [str(Path(sys.executable).with_name("smtp-balancer")), "-c", str(tmp_path / "config.yaml"), "fbl"]
    out = subprocess.run(
        [sys.executable, "-c", measure, str(report_file), *cli], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split()[-1]) * 1024  # ru_maxrss: KiB on Linux
    assert peak <= 4 * len(raw) + 50 * 1024 * 1024, (peak, len(raw))


def test_a_complaint_that_takes_a_tenant_over_its_ceiling_holds_it(
    make_config, rdb, tmp_path, capsys
) -> None:
    hold = {"above_percent": 0.3, "min_delivered": 300, "duration": "2h"}
    config = make_config({"tenants": ["shop.test"], "feedback": {"complaints": {"tenant_hold": hold}}})
    rdb.hset(KEYS.tenant_outcomes("shop.test", "2027011508"), "sent", 200)
    rdb.hset(KEYS.tenant_outcomes("shop.test", "2027011422"), "sent", 200)  # 10 hours before: in the day
    rdb.hset(KEYS.tenant_outcomes("shop.test", "2027011407"), "sent", 5000)  # 25 hours before: not
    assert stdin(intake(config, rdb), arf_report("127.0.0.3"), tmp_path / "kept") == 0
    assert not rdb.exists(KEYS.tenant_hold("shop.test"))  # 1 of 400: 0.25%, under 0.3%
    assert stdin(intake(config, rdb), arf_report("127.0.0.3"), tmp_path / "kept") == 0
    assert rdb.get(KEYS.tenant_hold("shop.test")).startswith("2 complaints of 400 delivered in 24 h (0.50%)")
    assert 7190 <= rdb.ttl(KEYS.tenant_hold("shop.test")) <= 7200
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith("; tenant shop.test held: 2 complaints of 400 delivered in 24 h (0.50%)")
    assert stdin(intake(config, rdb), arf_report("127.0.0.3"), tmp_path / "kept") == 0
    assert "tenant shop.test already held" in capsys.readouterr().out


def test_a_tenant_hold_with_a_pool_moves_the_tenant_instead(make_config, rdb, tmp_path, capsys) -> None:
    hold = {"above_percent": 0.3, "min_delivered": 300, "duration": "2h", "pool": "main"}
    config = make_config({"tenants": ["shop.test"], "feedback": {"complaints": {"tenant_hold": hold}}})
    rdb.hset(KEYS.tenant_outcomes("shop.test", "2027011508"), "sent", 300)
    assert stdin(intake(config, rdb), arf_report("127.0.0.3"), tmp_path / "kept") == 0
    assert not rdb.exists(KEYS.tenant_hold("shop.test"))
    assert rdb.get(KEYS.tenant_pool("shop.test")).startswith(
        "main 1 complaints of 300 delivered in 24 h (0.33%)"
    )
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith(
        "; tenant shop.test moved to pool main: 1 complaints of 300 delivered in 24 h (0.33%)"
    )


def test_a_small_tenant_is_never_held_on_too_few_messages(make_config, rdb, tmp_path) -> None:
    hold = {"above_percent": 0.3, "min_delivered": 1000}
    config = make_config({"tenants": ["shop.test"], "feedback": {"complaints": {"tenant_hold": hold}}})
    rdb.hset(KEYS.tenant_outcomes("shop.test", "2027011508"), "sent", 20)
    assert stdin(intake(config, rdb), arf_report("127.0.0.3"), tmp_path / "kept") == 0
    assert not rdb.exists(KEYS.tenant_hold("shop.test"))
