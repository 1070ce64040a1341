"""owner.lua against a real redis-server: one holder per feedback instance."""

from __future__ import annotations

import pytest
import redis

from integration.acl_lines import ACL, password_of
from smtp_balancer.state.instance_owner import InstanceOwner
from smtp_balancer.state.keys import KeySchema

KEYS = KeySchema()
KEY = KEYS.feedback_owner("mta1")


def owner(rdb, holder: str, lease_ms: int = 30_000) -> InstanceOwner:
    return InstanceOwner(rdb, KEYS, "mta1", holder, lease_ms)


def test_the_first_claims_renews_and_releases_the_second_waits(rdb):
    a, b = owner(rdb, "host=a pid=1 run=x"), owner(rdb, "host=b pid=2 run=y")
    assert a.claim().outcome == "claimed"
    assert 29_000 < rdb.pttl(KEY) <= 30_000
    held = b.claim()
    assert (held.outcome, held.found, held.ours) == ("held", "host=a pid=1 run=x", False)
    assert 29_000 < held.ttl_ms <= 30_000
    rdb.pexpire(KEY, 1_000)
    assert a.claim().outcome == "renewed" and rdb.pttl(KEY) > 29_000
    assert b.release().outcome == "held"  # not b's to release
    assert rdb.get(KEY) == "host=a pid=1 run=x"
    assert a.release().outcome == "released" and not rdb.exists(KEY)
    assert b.claim().outcome == "claimed" and rdb.get(KEY) == "host=b pid=2 run=y"


def test_a_stale_holder_is_replaced_only_while_it_is_still_the_one_there(rdb):
    a, b = owner(rdb, "host=a pid=1 run=x"), owner(rdb, "host=a pid=9 run=z")
    a.claim()
    assert b.claim(stale="host=a pid=1 run=OTHER").outcome == "held"
    got = b.claim(stale="host=a pid=1 run=x")
    assert (got.outcome, got.found, got.ours) == ("replaced", "host=a pid=1 run=x", True)
    assert rdb.get(KEY) == "host=a pid=9 run=z" and rdb.pttl(KEY) > 29_000


@pytest.mark.parametrize(
    ("made_by_hand", "found"),
    [
        (lambda rdb: rdb.set(KEY, "stuck"), "stuck"),  # a string with no TTL
        (lambda rdb: rdb.hset(KEY, "x", "1"), "(not a string)"),
    ],
)
def test_a_value_no_daemon_writes_is_replaced(rdb, made_by_hand, found):
    made_by_hand(rdb)
    got = owner(rdb, "host=a pid=1 run=x").claim()
    assert (got.outcome, got.found) == ("replaced", found)
    assert rdb.get(KEY) == "host=a pid=1 run=x" and rdb.pttl(KEY) > 29_000


def test_an_expired_lease_is_claimed_by_the_next(rdb):
    a, b = owner(rdb, "host=a pid=1 run=x", lease_ms=50), owner(rdb, "host=b pid=2 run=y")
    a.claim()
    rdb.pexpire(KEY, 1)  # as if a had stopped renewing
    while rdb.exists(KEY):
        pass
    assert b.claim().outcome == "claimed"
    assert a.claim().outcome == "held"


def test_the_feedback_daemons_acl_user_can_take_every_path(redis_server, rdb):
    """docs/security.md's sb-feedback user, as written: a hand-made key of another type,
    a claim, a renewal, a stale holder replaced and a release; Redis's ACL LOG stays empty."""
    words = ACL["sb-feedback"]
    rdb.execute_command(*words)
    user = redis.Redis(
        unix_socket_path=str(redis_server.socket),
        username="sb-feedback",
        password=password_of(words),
        decode_responses=True,
    )
    try:
        rdb.hset(KEY, "x", "1")
        a, b = owner(user, "host=a pid=1 run=x"), owner(user, "host=b pid=2 run=y")
        assert [a.claim().outcome, a.claim().outcome, b.claim().outcome] == ["replaced", "renewed", "held"]
        assert b.claim(stale="host=a pid=1 run=x").outcome == "replaced"
        assert [a.release().outcome, b.release().outcome] == ["held", "released"]
        assert rdb.execute_command("ACL", "LOG") == []
    finally:
        user.close()
