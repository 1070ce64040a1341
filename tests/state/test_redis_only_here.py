"""Redis I/O lives in state/ only (DESIGN.md, Layers): no module above it sends a
Redis command, by a redis-py client's method or as a raw command through the
channel. The rest calls state/'s stores, readers and scripts."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# redis-py command methods whose names mean nothing else in this code base
COMMAND_METHODS = frozenset(
    [
        "pipeline",
        "execute_command",
        "scan_iter",
        "eval",
        "evalsha",
        "hget",
        "hset",
        "hgetall",
        "hmget",
        "hincrby",
        "hincrbyfloat",
        "hdel",
        "hexists",
        "hkeys",
        "hlen",
        "mget",
        "mset",
        "zadd",
        "zrem",
        "zcard",
        "zrange",
        "zrangebyscore",
        "zrevrange",
        "zscore",
        "zremrangebyscore",
        "zcount",
        "incr",
        "incrby",
        "decr",
        "decrby",
        "expire",
        "pexpire",
        "expireat",
        "ttl",
        "pttl",
        "setex",
        "setnx",
        "sadd",
        "srem",
        "smembers",
        "scard",
        "lpush",
        "rpush",
        "lrange",
        "ltrim",
        "publish",
        "script_load",
        "register_script",
        "flushdb",
        "flushall",
        "watch",
        "multi",
        "send_now",
        "call_many",
        "fire",
    ]
)
# names a dict, a gauge or a path has too: a Redis call only on a Redis-like receiver
SHARED_METHODS = frozenset(
    {"get", "set", "delete", "keys", "type", "exists", "ping", "info", "call", "execute", "scan"}
)
REDIS_RECEIVERS = frozenset({"r", "rdb", "redis", "client", "pipe", "write", "conn"})
# a raw command name, passed as a call's first argument or first in a command tuple
RAW_COMMANDS = frozenset(
    [
        "GET",
        "SET",
        "DEL",
        "HGET",
        "HSET",
        "HGETALL",
        "HMGET",
        "HDEL",
        "HINCRBY",
        "MGET",
        "MSET",
        "SCAN",
        "PING",
        "EVAL",
        "EVALSHA",
        "SCRIPT",
        "ZADD",
        "ZREM",
        "ZCARD",
        "ZCOUNT",
        "ZRANGE",
        "EXPIRE",
        "PEXPIRE",
        "TTL",
        "PTTL",
        "EXISTS",
        "TYPE",
        "KEYS",
        "OBJECT",
        "INCRBY",
        "MULTI",
        "EXEC",
        "WATCH",
        "TIME",
        "DEBUG",
        "CONFIG",
        "CLIENT",
        "SUBSCRIBE",
        "PUBLISH",
        "HELLO",
        "AUTH",
        "SELECT",
        "INFO",
        "UNLINK",
    ]
)


def _receiver(func: ast.Attribute) -> str:
    value = func.value
    if isinstance(value, ast.Name):
        return value.id
    if isinstance(value, ast.Attribute):
        return value.attr
    return ""


def _raw(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value in RAW_COMMANDS


def violations(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, receiver = node.func.attr, _receiver(node.func)
            if name in COMMAND_METHODS or (name in SHARED_METHODS and receiver in REDIS_RECEIVERS):
                found.append((node.lineno, f"{receiver}.{name}()"))
            elif node.args and _raw(node.args[0]):
                found.append((node.lineno, f"{receiver}.{name}({node.args[0].value!r}, ...)"))  # type: ignore[attr-defined]
        elif isinstance(node, ast.Tuple) and node.elts and _raw(node.elts[0]):
            found.append((node.lineno, f"command tuple {node.elts[0].value!r}"))  # type: ignore[attr-defined]
    return found


def test_the_check_finds_each_kind_of_redis_call() -> None:
    snippet = """
r.hget("k", "f")
self.r.pipeline()
pipe.set("k", 1)
await channel.call("HGETALL", key)
commands = [("MGET", *keys)]
gauge.set(1)
mapping.get("k")
path.exists()
await channel.ping()
"""
    assert [line for line, _ in violations(ast.parse(snippet))] == [2, 3, 4, 5, 6]


def test_no_redis_command_is_sent_outside_state() -> None:
    found = []
    for base in ("smtp_balancer", "policyd", "milter"):
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("smtp_balancer", "state"):
                continue
            found += [f"{rel}:{line}: {what}" for line, what in violations(ast.parse(path.read_text()))]
    assert not found, "Redis commands outside smtp_balancer/state/:\n" + "\n".join(found)
