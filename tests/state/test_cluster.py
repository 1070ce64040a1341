"""Finding our slot's master in a Redis Cluster, sans I/O: the slot, the CLUSTER
SLOTS reply, and which replies send a daemon to ask again. The cluster itself, real
processes under real Postfix: integration/test_redis_cluster.py."""

from __future__ import annotations

import pytest
from redis.crc import key_slot
from redis.exceptions import ResponseError

from smtp_balancer.config import validate_config
from smtp_balancer.config.loader import ConfigInvalid
from smtp_balancer.state.cluster import master_of, moved, prefix_slot

SLOTS = [
    [0, 5460, [b"127.0.0.1", 7000, b"id0"], [b"127.0.0.1", 7003, b"id3"]],
    [5461, 10922, [b"", 7001, b"id1"], [b"127.0.0.1", 7004, b"id4"]],
    [10923, 16383, [b"10.0.0.3", 7002, b"id2"]],
]


def test_every_key_of_a_prefix_is_in_its_hash_tags_slot():
    assert prefix_slot("sb") == key_slot(b"{sb}:count:out1:day:20261124") == key_slot(b"{sb}:arms:20416:3")


def test_the_master_of_a_slot_is_read_from_cluster_slots():
    assert master_of(SLOTS, 0, ("127.0.0.1", 7005)) == ("127.0.0.1", 7000)
    assert master_of(SLOTS, 12000, ("127.0.0.1", 7005)) == ("10.0.0.3", 7002)
    # an empty host is the address of the node that answered
    assert master_of(SLOTS, 6000, ("192.0.2.9", 7005)) == ("192.0.2.9", 7001)
    assert master_of(SLOTS[:1], 9000, ("127.0.0.1", 7005)) is None


def test_moved_ask_and_readonly_send_a_daemon_to_ask_again():
    assert moved(ResponseError("MOVED 3999 127.0.0.1:7002"))
    assert moved(ResponseError("ASK 3999 127.0.0.1:7002"))
    assert moved(ResponseError("READONLY You can't write against a read only replica."))
    assert not moved(ResponseError("NOSCRIPT No matching script"))
    assert not moved("MOVED 3999 127.0.0.1:7002")  # a value, not an error reply


def test_a_cluster_excludes_sentinel_and_tls():
    base = {
        "endpoints": {"out1": {"bind_address": "127.0.0.2"}},
        "pools": {"p": {"endpoints": [{"endpoint": "out1", "weight": 1}]}},
    }
    cluster = {"nodes": ["127.0.0.1:7000"]}
    assert validate_config({**base, "redis": {"cluster": cluster}}).redis.cluster is not None
    with pytest.raises(ConfigInvalid, match="exclude each other"):
        validate_config(
            {**base, "redis": {"cluster": cluster, "sentinel": {"hosts": ["h:1"], "service_name": "m"}}}
        )
    with pytest.raises(ConfigInvalid, match="must be host:port, got 'node1'"):
        validate_config({**base, "redis": {"cluster": {"nodes": ["127.0.0.1:7000", "node1"]}}})
    with pytest.raises(ConfigInvalid, match=r"does not take redis\.tls"):
        validate_config({**base, "redis": {"cluster": cluster, "tls": {"ca_file": "/etc/ca.pem"}}})
