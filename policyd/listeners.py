"""The policy service's listening sockets, bound from ``policyd.listen``.

One implementation for both ways of serving: a single process hands them to
asyncio; with ``policyd.workers`` above 1 the supervisor accepts on them and
passes each connection to a worker (policyd/workers.py).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import socket
import stat
from pathlib import Path

from smtp_balancer.activation import inherited_sockets
from smtp_balancer.config.base import parse_hostport
from smtp_balancer.config.services import PolicydConfig
from smtp_balancer.observe.metrics import ListenError

log = logging.getLogger("smtp_balancer.policyd")

LISTEN_BACKLOG = 1024
# a worker's messages to its supervisor: one per SOCK_SEQPACKET datagram; the
# supervisor sends each connection as one datagram carrying its descriptor
WORKER_READY = b"r"
WORKER_CLOSED = b"-"
WORKER_ALIVE = b"w"  # every second from a worker's event loop: a frozen one falls silent
CONNECTION = b"c"


def bind_listeners(config: PolicydConfig, listen: bool = True) -> list[socket.socket]:
    """Every ``listen`` address bound and listening (a host name may give several
    sockets, as asyncio's create_server does); ListenError names the first that fails.
    ``listen=False``: bound only, so clients are refused until ``sock.listen``.
    Sockets passed by systemd (smtp-balancer-policyd.socket) are used instead: they
    stay open while the daemon restarts, so no client is refused meanwhile."""
    passed = inherited_sockets()
    if passed:
        log.info("using %d socket(s) systemd passed; policyd.listen is not used", len(passed))
        return passed
    out: list[socket.socket] = []
    for spec in config.listen:
        try:
            if spec.startswith("unix:"):
                out.append(_unix(spec[5:], config, listen))
            else:
                out.extend(_inet(*parse_hostport(spec.removeprefix("inet:")), listen))
        except (OSError, KeyError) as exc:
            for sock in out:
                sock.close()
            # KeyError: getpwnam/getgrnam found no such unix_owner or unix_group
            why = exc if isinstance(exc, OSError) else f"no such user or group {exc.args[0]}"
            raise ListenError("policyd.listen", spec, why) from exc
    return out


def _inet(host: str, port: int, listen: bool) -> list[socket.socket]:
    out: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # the IPv4 address of the same name gets its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            if listen:
                sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out


def _unix(path: str, config: PolicydConfig, listen: bool) -> socket.socket:
    sock_path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(sock_path.stat().st_mode):
            sock_path.unlink()  # a stale socket from a previous run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, int(config.unix_mode, 8))
        if config.unix_owner or config.unix_group:
            uid = pwd.getpwnam(config.unix_owner).pw_uid if config.unix_owner else -1
            gid = grp.getgrnam(config.unix_group).gr_gid if config.unix_group else -1
            os.chown(path, uid, gid)
        if listen:
            sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def address_of(sock: socket.socket) -> str:
    name = sock.getsockname()
    return f"unix:{name}" if isinstance(name, str) else f"inet:{name[0]}:{name[1]}"
