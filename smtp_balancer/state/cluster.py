"""Redis Cluster: which master serves our keys.

Every key starts with the ``{<prefix>}`` hash tag, so all of them live in one slot,
on one master at a time. The daemons and the CLI talk to that master as to a single
Redis (scripts, MULTI and SCAN work there as anywhere), and ask the cluster's nodes
again when its connection breaks (a failover) or it answers MOVED, ASK or READONLY
(the slot moved, or the node is a replica now). That gives a cluster's availability;
the load of one slot stays on one master.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from smtp_balancer.config.base import parse_hostport
from smtp_balancer.config.services import RedisConfig

Address = tuple[str, int]


def prefix_slot(prefix: str) -> int:
    """The slot every key of ``prefix`` hashes to (its hash tag)."""
    return key_slot(f"{{{prefix}}}".encode())


def node_addresses(cfg: RedisConfig) -> list[Address]:
    assert cfg.cluster is not None
    return [parse_hostport(node) for node in cfg.cluster.nodes]  # checked with the config


def master_of(slots: Sequence[Any], slot: int, asked: Address) -> Address | None:
    """The master of ``slot`` in a CLUSTER SLOTS reply from the node at ``asked`` (an
    empty host there means that node's own address); None when no range holds it."""
    for entry in slots:
        start, end, master = int(entry[0]), int(entry[1]), entry[2]
        if start <= slot <= end:
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            return (host or asked[0], int(master[1]))
    return None


class NoSlotMaster(RedisConnectionError):
    pass


def _unknown(prefix: str, errors: list[str]) -> NoSlotMaster:
    return NoSlotMaster(
        f"no cluster node named the master of slot {prefix_slot(prefix)}: {'; '.join(errors)}"
    )


def node_kwargs(cfg: RedisConfig, username: str | None, password: str | None) -> dict[str, Any]:
    """How to ask a node: the data's ACL user (it needs +cluster|slots) and timeouts."""
    timeout = cfg.connect_timeout_ms / 1000
    kwargs: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": max(timeout, 1.0)}
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    return kwargs


def find_master(cfg: RedisConfig, client_kwargs: dict[str, Any]) -> Address:
    """Ask the configured nodes, in turn, for the master of the prefix's slot."""
    prefix = cfg.prefix
    errors = []
    for address in node_addresses(cfg):
        # no retries: a dead node (the master just killed) must cost a refused connect, not
        # redis-py's backoff, or the asking outlasts the caller's connect timeout
        node = redis.Redis(host=address[0], port=address[1], retry=Retry(NoBackoff(), 0), **client_kwargs)
        try:
            found = master_of(node.execute_command("CLUSTER", "SLOTS"), prefix_slot(prefix), address)
        except redis.RedisError as exc:
            errors.append(f"{address[0]}:{address[1]}: {exc}")
            continue
        finally:
            node.close()
        if found is not None:
            return found
        errors.append(f"{address[0]}:{address[1]}: the slot is not served")
    raise _unknown(prefix, errors)


async def find_master_async(cfg: RedisConfig, client_kwargs: dict[str, Any]) -> Address:
    """``find_master`` for the deciders' event loop."""
    prefix = cfg.prefix
    errors = []
    for address in node_addresses(cfg):
        node = redis.asyncio.Redis(
            host=address[0], port=address[1], retry=AsyncRetry(NoBackoff(), 0), **client_kwargs
        )
        try:
            found = master_of(await node.execute_command("CLUSTER", "SLOTS"), prefix_slot(prefix), address)
        except redis.RedisError as exc:
            errors.append(f"{address[0]}:{address[1]}: {exc}")
            continue
        finally:
            await node.aclose()
        if found is not None:
            return found
        errors.append(f"{address[0]}:{address[1]}: the slot is not served")
    raise _unknown(prefix, errors)


def moved(reply: object) -> bool:
    """Whether a reply says our slot is served elsewhere now: ask the cluster again."""
    text = str(reply)
    return isinstance(reply, redis.ResponseError) and text.startswith(("MOVED ", "ASK ", "READONLY "))


class SlotMasterConnection(redis.Connection):
    """A connection to the master of our slot, found on every (re)connect."""

    def __init__(self, *, find: Any, **kwargs: Any) -> None:
        self._find = find  # () -> Address
        super().__init__(**kwargs)

    def _connect(self) -> Any:
        self.host, self.port = self._find()
        return super()._connect()

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except (AskError, ReadOnlyError) as exc:  # MOVED is an AskError too
            self.disconnect()  # the next command asks the cluster where the slot is
            raise RedisConnectionError(f"the cluster moved our slot: {exc}") from exc
