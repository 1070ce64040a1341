"""The pipelined ScriptChannel against real redis-servers: pairing, scripts, AUTH, ACL, TLS."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from integration.configs import deep_merge
from integration.redis_server import RedisServer
from integration.sink import free_port
from smtp_balancer.config import validate_config
from smtp_balancer.config.services import RedisConfig
from smtp_balancer.decision.facts import Facts
from smtp_balancer.engine import Engine
from smtp_balancer.state.channel import ScriptChannel
from smtp_balancer.state.client import describe, sync_client
from smtp_balancer.state.scripts import LuaScript
from tests.conftest import BASE

ECHO = LuaScript("echo", "return ARGV[1]")


def channel(url: str, **cfg) -> ScriptChannel:
    return ScriptChannel(RedisConfig(url=url, connect_timeout_ms=2000, **cfg))


async def test_concurrent_replies_reach_their_callers(redis_server: RedisServer):
    ch = channel(redis_server.url)
    try:
        replies = await asyncio.gather(*(ch.call("ECHO", f"msg-{i}") for i in range(3000)))
        assert replies == [f"msg-{i}".encode() for i in range(3000)]
        with pytest.raises(ResponseError):
            await ch.call("NOSUCHCOMMAND")
        assert await ch.call("PING") == b"PONG"  # an error reply does not desync the FIFO
    finally:
        await ch.close()


async def test_noscript_after_flush_is_reloaded(redis_server: RedisServer, rdb):
    ch = channel(redis_server.url)
    try:
        assert await ch.evalsha(ECHO, [b"k"], ["hello"]) == b"hello"
        rdb.script_flush()
        assert await ch.evalsha(ECHO, [b"k"], ["again"]) == b"again"
    finally:
        await ch.close()


async def test_reconnects_after_restart(redis_server: RedisServer):
    ch = channel(redis_server.url)
    try:
        assert await ch.call("PING") == b"PONG"
        redis_server.stop()
        with pytest.raises((RedisConnectionError, OSError)):
            await ch.call("PING")
        redis_server.start()
        assert await ch.call("PING") == b"PONG"
    finally:
        await ch.close()


async def test_reset_fails_waiting_callers(redis_server: RedisServer):
    ch = channel(redis_server.url)
    try:
        await ch.call("PING")
        blocked = asyncio.ensure_future(ch.call("BLPOP", "never", "5"))
        await asyncio.sleep(0.05)
        ch.reset("test")
        with pytest.raises(RedisConnectionError):
            await blocked
    finally:
        await ch.close()


@pytest.fixture
def auth_redis(tmp_path: Path):
    server = RedisServer(
        tmp_path / "auth-redis",
        password="s3cret-pw",
        extra={"user": ["balancer", "on", ">acl-pw", "~{sb}:*", "&*", "+@all"]},
    )
    server.start()
    yield server
    server.stop()


async def test_password_and_acl_user(auth_redis: RedisServer, monkeypatch, caplog):
    ch = channel(auth_redis.url, password="s3cret-pw")
    acl = channel(auth_redis.url, username="balancer", password="acl-pw")
    try:
        assert await ch.call("PING") == b"PONG"
        assert await acl.call("SET", "{sb}:x", "1") == b"OK"
        with pytest.raises(ResponseError, match="NOPERM"):
            await acl.call("SET", "other-key", "1")  # the ACL is really applied
    finally:
        await ch.close()
        await acl.close()
    # the CLI client uses the same settings; the env var wins over the YAML
    monkeypatch.setenv("SMTP_BALANCER_REDIS_PASSWORD", "acl-pw")
    assert sync_client(RedisConfig(url=auth_redis.url, username="balancer")).set("{sb}:y", "1")


async def test_wrong_password_degrades_and_never_logs_the_secret(auth_redis: RedisServer, caplog):
    # built here, not with make_config: that fixture points at the password-less server
    raw = deep_merge(BASE, {"redis": {"url": auth_redis.url, "password": "wrong-secret-123"}})
    config = validate_config(raw)
    engine = Engine(config)
    try:
        with caplog.at_level(logging.WARNING):
            d = await engine.decide(Facts(recipients=("a@gmail.com",)))
        assert d.degraded and d.outcome == "route"
        assert "redis_error" in caplog.text and "WRONGPASS" in caplog.text
        assert "wrong-secret-123" not in caplog.text
    finally:
        await engine.aclose()


def make_cert(certs: Path) -> None:
    """One self-signed certificate for localhost: the server's, the CA, and a client's."""
    certs.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            certs / "key.pem",
            "-out",
            certs / "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(params=["no", "yes"], ids=["server-auth", "mutual"])
def tls_redis(request: pytest.FixtureRequest, tmp_path: Path):
    """A TLS-only redis-server; "mutual" requires a client certificate (tls-auth-clients yes)."""
    certs = tmp_path / "tls"
    make_cert(certs)
    port = free_port()
    server = RedisServer(
        tmp_path / "tls-redis",
        extra={
            "tls-port": str(port),
            "tls-cert-file": str(certs / "cert.pem"),
            "tls-key-file": str(certs / "key.pem"),
            "tls-ca-cert-file": str(certs / "cert.pem"),
            "tls-auth-clients": request.param,
        },
    )
    server.start()
    yield f"rediss://localhost:{port}/0", certs, request.param == "yes"
    server.stop()


async def test_tls(tls_redis):
    url, certs, mutual = tls_redis
    tls = {"ca_file": str(certs / "cert.pem")}
    if mutual:
        tls |= {"cert_file": str(certs / "cert.pem"), "key_file": str(certs / "key.pem")}
    ch = ScriptChannel(RedisConfig(url=url, tls=tls, connect_timeout_ms=3000))
    try:
        assert await ch.call("PING") == b"PONG"
        assert sync_client(RedisConfig(url=url, tls=tls)).ping()
    finally:
        await ch.close()


@pytest.mark.parametrize("tls_redis", ["yes"], indirect=True, ids=["mutual"])
async def test_a_missing_client_certificate_is_named_and_leaves_no_stray_future(tls_redis, caplog):
    import gc

    url, certs, _ = tls_redis
    raw = deep_merge(BASE, {"redis": {"url": url, "tls": {"ca_file": str(certs / "cert.pem")}}})
    engine = Engine(validate_config(raw))
    caplog.set_level(logging.WARNING)
    try:
        await engine.start()  # fails open: decisions from YAML
        for i in range(20):
            decision = await engine.decide(Facts(sender="a@shop.test", recipients=(f"u{i}@gmail.com",)))
            assert decision.outcome == "route" and decision.degraded
        with pytest.raises(RedisConnectionError, match=r"redis.tls.cert_file is not set"):
            await engine.channel.call("PING")
    finally:
        await engine.aclose()
    gc.collect()
    await asyncio.sleep(0)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "never retrieved" not in text
    assert "redis.tls.cert_file is not set" in text  # the warning says why


async def test_sentinel_discovers_the_master(tmp_path: Path):
    master_port, sentinel_port = free_port(), free_port()
    master = RedisServer(tmp_path / "master", extra={"port": str(master_port)})
    master.start()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
    )
    sentinel = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cfg = RedisConfig(
        sentinel={"hosts": [f"127.0.0.1:{sentinel_port}"], "service_name": "mymaster"},
        connect_timeout_ms=2000,
    )
    ch = ScriptChannel(cfg)
    try:
        for _ in range(100):  # the sentinel needs a moment to listen
            try:
                assert await ch.call("SET", "via-sentinel", "1") == b"OK"
                break
            except (RedisConnectionError, OSError):
                await asyncio.sleep(0.05)
        assert master.client().get("via-sentinel") == "1"
        assert sync_client(cfg).get("via-sentinel") == b"1"
    finally:
        await ch.close()
        sentinel.kill()
        sentinel.wait(timeout=10)
        master.stop()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:S3cr3t@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("redis://u:S3cr3t@h:1/0?password=S3cr3t", "redis://***@h:1/0?password=***"),
        ("redis://127.0.0.1:16391/0?password=S3cr3t", "redis://127.0.0.1:16391/0?password=***"),
        (
            "rediss://h:1/0?ssl_cert_reqs=none&Password=S3cr3t",
            "rediss://h:1/0?ssl_cert_reqs=none&Password=***",
        ),
        ("unix:///run/redis.sock?db=2&password=S3cr3t", "unix:///run/redis.sock?db=2&password=***"),
        ("redis://a:b@c@h:1", "redis://***@h:1"),
    ],
)
def test_redis_urls_never_show_a_secret(url: str, shown: str):
    assert describe(RedisConfig(url=url)) == shown and "S3cr3t" not in describe(RedisConfig(url=url))


def test_the_clock_offset_errs_early_and_a_slow_handshake_does_not_replace_a_tight_one():
    from smtp_balancer.state.channel import _offset

    # Redis read its clock at some moment of the round trip: the latest is assumed,
    # so deadlines come early (a call may count nothing), never late
    assert _offset([b"1000", b"500000"], sent_at=990.0, received_at=990.2) == 1000.5 - 990.2
    assert _offset(ResponseError("NOPERM"), 0.0, 0.1) is None
    ch = channel("unix:///nonexistent")
    ch._measured(10.0, rtt=0.001)
    ch._measured(8.0, rtt=2.0)  # a handshake queued behind a sleeping Redis
    assert ch.redis_offset_s == 10.0
    ch._measured(10.2, rtt=0.01)  # a quick one replaces it
    assert ch.redis_offset_s == 10.2
    ch.reset()  # a reconnect keeps it: the clocks did not move
    assert ch.redis_offset_s == 10.2


async def test_silence_counts_only_while_a_reply_is_owed(redis_server):
    """A quiet channel (nothing asked) is not a silent Redis; one that owes a reply is."""
    channel = ScriptChannel(RedisConfig(url=redis_server.url))
    try:
        await channel.call("PING")
        channel.last_reply_at -= 60  # as if this daemon had been stopped for a minute
        assert channel.silent_s() == 0.0
        slept = asyncio.ensure_future(channel.call("DEBUG", "SLEEP", "1"))
        owed = asyncio.ensure_future(channel.call("PING"))
        while channel.silent_s() < 0.2:  # Redis sleeps: replies are owed, and nothing comes
            assert not owed.done()
            await asyncio.sleep(0.01)
        assert channel.silent_s() < 60  # measured from the first request owed, not the last reply
        assert await slept in ("OK", b"OK") and await owed in ("PONG", b"PONG")
        assert channel.silent_s() == 0.0
    finally:
        await channel.close()
