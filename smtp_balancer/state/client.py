"""Redis settings shared by the CLI's client (redis-py) and the deciders' ScriptChannel.

Supports redis://, rediss:// (TLS) and unix:// URLs, ACL users, AUTH
passwords from a file or the environment, client certificates and Sentinel.
The password never reaches a log line: it is a SecretStr until handed to redis-py.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import redis
import redis.sentinel

from smtp_balancer.config.base import parse_hostport
from smtp_balancer.config.services import RedisConfig
from smtp_balancer.state import cluster

PASSWORD_ENV = "SMTP_BALANCER_REDIS_PASSWORD"
# one ACL user per daemon from one shared YAML: each systemd unit sets its own
USERNAME_ENV = "SMTP_BALANCER_REDIS_USERNAME"


class RedisSetupError(Exception):
    pass


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise RedisSetupError(f"cannot read Redis password file {path}: {exc.strerror}") from exc


def resolve_username(cfg: RedisConfig) -> str | None:
    return os.environ.get(USERNAME_ENV) or cfg.username


def resolve_password(cfg: RedisConfig) -> str | None:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if cfg.password_file:
        return _read_secret(cfg.password_file)
    return cfg.password.get_secret_value() if cfg.password else None


def _tls_kwargs(cfg: RedisConfig) -> dict[str, Any]:
    if not cfg.tls:
        return {}
    return {
        "ssl_ca_certs": cfg.tls.ca_file,
        "ssl_certfile": cfg.tls.cert_file,
        "ssl_keyfile": cfg.tls.key_file,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if cfg.tls.verify else ssl.CERT_NONE,
        "ssl_check_hostname": cfg.tls.verify,
    }


def _client_kwargs(cfg: RedisConfig, timeout_s: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": cfg.connect_timeout_ms / 1000,
        "socket_timeout": timeout_s,
    }
    if cfg.sentinel:
        # Sentinel builds its own pool per master; TLS is not implied by a URL there
        if cfg.tls:
            kwargs.update({"ssl": True, **_tls_kwargs(cfg)})
    else:
        kwargs["max_connections"] = cfg.max_connections
        if cfg.url.startswith("rediss://"):
            kwargs.update(_tls_kwargs(cfg))
    username = resolve_username(cfg)
    if username:
        kwargs["username"] = username
    password = resolve_password(cfg)
    if password:
        kwargs["password"] = password
    return kwargs


def sentinel_kwargs(cfg: RedisConfig) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    assert cfg.sentinel is not None
    hosts = [parse_hostport(hostport) for hostport in cfg.sentinel.hosts]  # checked at load
    skw: dict[str, Any] = {"socket_connect_timeout": cfg.connect_timeout_ms / 1000}
    if cfg.sentinel.username:
        skw["username"] = cfg.sentinel.username
    if cfg.sentinel.password_file:
        skw["password"] = _read_secret(cfg.sentinel.password_file)
    elif cfg.sentinel.password:
        skw["password"] = cfg.sentinel.password.get_secret_value()
    if cfg.tls:
        skw.update({"ssl": True, **_tls_kwargs(cfg)})
    return hosts, skw


def sync_client(cfg: RedisConfig, timeout_s: float | None = None) -> redis.Redis:
    timeout = timeout_s if timeout_s is not None else cfg.admin_timeout_ms / 1000
    kwargs = _client_kwargs(cfg, timeout)
    if cfg.sentinel:
        hosts, skw = sentinel_kwargs(cfg)
        return redis.sentinel.Sentinel(hosts, sentinel_kwargs=skw, **kwargs).master_for(
            cfg.sentinel.service_name
        )
    if cfg.cluster:
        ask = cluster.node_kwargs(cfg, kwargs.get("username"), kwargs.get("password"))
        pool = redis.ConnectionPool(
            connection_class=cluster.SlotMasterConnection,
            find=lambda: cluster.find_master(cfg, ask),
            **kwargs,
        )
        return redis.Redis(connection_pool=pool)
    pool = redis.ConnectionPool.from_url(cfg.url, **kwargs)
    # from_url lets the URL's credentials win; ours (env, file, YAML field) come first,
    # as they do for the daemons' ScriptChannel
    pool.connection_kwargs.update({k: kwargs[k] for k in ("username", "password") if k in kwargs})
    return redis.Redis(connection_pool=pool)


def tls_hint(cfg: RedisConfig) -> str:
    """What a closed TLS connection most likely means, for the error line: a server
    with tls-auth-clients yes drops a client that sent no certificate."""
    uses_tls = cfg.url.startswith("rediss://") or (cfg.sentinel is not None and cfg.tls is not None)
    if uses_tls and not (cfg.tls and cfg.tls.cert_file):
        return " (over TLS without a client certificate: redis.tls.cert_file is not set)"
    return ""


def describe(cfg: RedisConfig) -> str:
    """Where we connect, for log lines: never the password."""
    if cfg.sentinel:
        return f"sentinel {','.join(cfg.sentinel.hosts)} service {cfg.sentinel.service_name}"
    if cfg.cluster:
        return f"cluster {','.join(cfg.cluster.nodes)}"
    username = resolve_username(cfg)
    return redact_url(cfg.url) + (f" as {username}" if username else "")


# query parameters that can carry a secret in a Redis URL (redis-py reads ?password=)
_SECRET_PARAMS = frozenset({"password", "pass", "passwd", "pwd", "auth", "secret", "token", "key"})


def redact_url(url: str) -> str:
    """A Redis URL fit for a log line: userinfo and secret query parameters as ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, qsep, query = rest.partition("?")
    head, slash, path = rest.partition("/")
    if "@" in head:
        head = "***@" + head.rpartition("@")[2]
    if qsep:
        params = []
        for part in query.split("&"):
            name, eq, _ = part.partition("=")
            params.append(f"{name}=***" if eq and name.lower() in _SECRET_PARAMS else part)
        query = "&".join(params)
    return f"{scheme}://{head}{slash}{path}{qsep}{query}"
