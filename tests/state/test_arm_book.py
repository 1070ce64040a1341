"""The day books of arm records (armbook.lua, arms.lua, arm_read.lua) on real Redis:
every record is found again after any number of splits, each bucket stays in Redis's
compact encoding, a record costs at most 64 bytes, and the books expire."""

from __future__ import annotations

import random

import redis

from smtp_balancer.state import scripts
from smtp_balancer.state.arm_book import DAY_S, arm_day, read_call, write_call
from smtp_balancer.state.experiments import ExperimentStore
from smtp_balancer.state.keys import ARM_RECORD_TTL_S, KeySchema

KEYS = KeySchema()
NOW = 1_795_516_208.0  # 2026-11-24 10:30:08 UTC
LISTPACK_MAX = 128  # Redis's default hash-max-listpack-entries


def queue_ids(rng: random.Random, n: int) -> list[str]:
    """Postfix's short ids (hex) and Exim's (base 62 in three parts), mixed."""
    out = []
    for i in range(n):
        if i % 2:
            out.append("".join(rng.choices("0123456789ABCDEF", k=11)))
        else:
            b62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
            out.append("-".join("".join(rng.choices(b62, k=k)) for k in (6, 6, 2)))
    return out


def write(rdb: redis.Redis, records: list[tuple[str, str]], wall: float = NOW) -> int:
    added = 0
    for i in range(0, len(records), 500):  # a decider's round sends what 50 ms decided
        keys, args = write_call(KEYS, wall, records[i : i + 500])
        added += rdb.eval(scripts.ARMS.text, len(keys), *keys, *args)
    return added


def read(rdb: redis.Redis, ids: list[str], wall: float = NOW) -> list[object]:
    return ExperimentStore(rdb, KEYS).arm_records(ids, wall)


def test_every_record_is_found_after_the_splits_and_buckets_stay_compact(rdb: redis.Redis) -> None:
    ids = queue_ids(random.Random("arms"), 20_000)
    records = [(q, f"ab {'ab'[i % 2]} {int(NOW)}") for i, q in enumerate(ids)]
    assert write(rdb, records) == len(set(ids))
    day = arm_day(NOW)
    level, split, n = (int(x) for x in rdb.hmget(KEYS.arm_dir(day), "level", "split", "n"))
    assert n == len(set(ids)) and level >= 8  # it split: 20,000 records in 256 or more buckets
    buckets = list(rdb.scan_iter(match=f"{KEYS.base}:arms:{day}:*", count=1000))
    assert len(buckets) == 2**level + split
    assert max(rdb.hlen(b) for b in buckets) <= LISTPACK_MAX
    assert {rdb.object("encoding", b) for b in buckets} == {"listpack"}
    found = read(rdb, [*ids, "NOPE1", "NOPE2"])
    assert found == [*(v for _, v in records), None, None]


def test_writing_a_record_again_adds_nothing(rdb: redis.Redis) -> None:
    records = [(q, "ab a 1") for q in queue_ids(random.Random("again"), 300)]
    assert write(rdb, records) == 300
    assert write(rdb, records[:100]) == 0
    assert rdb.hget(KEYS.arm_dir(arm_day(NOW)), "n") == "300"


def test_a_record_costs_at_most_64_bytes(rdb: redis.Redis) -> None:
    rdb.config_set("hash-max-listpack-entries", LISTPACK_MAX)  # the default, said out loud
    ids = queue_ids(random.Random("memory"), 50_000)
    before = rdb.info("memory")["used_memory"]
    write(rdb, [(q, f"ab a {int(NOW)}") for q in ids])
    per_record = (rdb.info("memory")["used_memory"] - before) / len(ids)
    assert per_record <= 64, per_record


def test_a_record_is_found_for_its_days_and_expires_with_them(rdb: redis.Redis) -> None:
    write(rdb, [("Q1", "ab a 1")], wall=NOW)
    for days in (0, 1, 5):  # the same day, the next, and the last the record outlives
        assert read(rdb, ["Q1"], wall=NOW + days * DAY_S) == ["ab a 1"], days
    assert read(rdb, ["Q1"], wall=NOW + 7 * DAY_S) == [None]  # past its days
    # a decider whose clock is ahead wrote tomorrow's book: found today
    write(rdb, [("Q2", "ab b 2")], wall=NOW + DAY_S)
    assert read(rdb, ["Q2"], wall=NOW) == ["ab b 2"]
    end_of_day = (arm_day(NOW) + 1) * DAY_S - NOW
    for key in rdb.scan_iter(match=f"{KEYS.base}:arm*:{arm_day(NOW)}*"):
        assert end_of_day + ARM_RECORD_TTL_S - 5 <= rdb.ttl(key) <= end_of_day + ARM_RECORD_TTL_S, key


def test_an_earlier_releases_record_is_still_read(rdb: redis.Redis) -> None:
    rdb.set(KEYS.arm_record("OLD1"), "ab a 1700000000")
    rdb.hset(KEYS.arm_record("WRONG"), "a", "b")  # hand-made, not a string: no record
    write(rdb, [("NEW1", "ab b 1")])
    assert read(rdb, ["OLD1", "NEW1", "WRONG"]) == ["ab a 1700000000", "ab b 1", None]


def test_a_hand_edited_book_neither_fails_nor_loses_new_records(rdb: redis.Redis) -> None:
    rdb.hset(KEYS.arm_dir(arm_day(NOW)), mapping={"level": "x", "split": "-3", "n": "lots"})
    ids = queue_ids(random.Random("junk"), 1000)
    write(rdb, [(q, "ab a 1") for q in ids])
    assert read(rdb, ids) == ["ab a 1"] * len(ids)


def test_the_lookup_reads_the_books_from_tomorrow_back() -> None:
    keys, args = read_call(KEYS, NOW, ["Q"])
    assert keys == [KEYS.arm_dir(arm_day(NOW) + 1)]
    assert args[1:] == [arm_day(NOW) + 1, 6, "Q"]
