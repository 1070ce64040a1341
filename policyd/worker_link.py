"""A policy worker's line to its supervisor (policyd/workers.py): the connections
the supervisor passes come in over it (SCM_RIGHTS), and the worker tells it that
it is ready, alive, and that a connection closed, so the next goes to the least busy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from policyd.listeners import WORKER_READY

log = logging.getLogger("smtp_balancer.policyd")


class WorkerLink:
    def __init__(
        self,
        control: socket.socket,
        protocol: Callable[[], asyncio.Protocol],
        lost: Callable[[], None],
        orphaned: Callable[[], None],
    ) -> None:
        """``protocol`` makes the protocol of a passed connection; ``lost`` is called for
        one that could not be served; ``orphaned`` when the supervisor is gone."""
        self.control = control
        self.protocol = protocol
        self.lost = lost
        self.orphaned = orphaned
        self._adopting: set[asyncio.Task[object]] = set()
        control.setblocking(False)
        asyncio.get_running_loop().add_reader(control.fileno(), self._receive)
        control.send(WORKER_READY)

    def tell(self, message: bytes) -> None:
        """One message to the supervisor."""
        with contextlib.suppress(OSError):  # a full queue or a gone supervisor: _receive sees that
            self.control.send(message)

    def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self.control, 16, 8)
            except BlockingIOError:
                return
            except OSError as exc:
                message, fds = b"", []
                log.error("policy worker: lost the line to its supervisor: %s", exc)
            if not message and not fds:  # end of file: the supervisor is gone
                loop.remove_reader(self.control.fileno())
                self.orphaned()
                return
            for fd in fds:
                task = loop.create_task(self._adopt_one(socket.socket(fileno=fd)))
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)

    async def _adopt_one(self, sock: socket.socket) -> None:
        if not await adopt(sock, self.protocol):
            self.lost()


async def adopt(sock: socket.socket, protocol: Callable[[], asyncio.Protocol]) -> bool:
    """Serve a connection another process accepted (a supervisor's, or the daemon a
    successor takes over from); False when it cannot be (already reset, say)."""
    try:
        await asyncio.get_running_loop().connect_accepted_socket(protocol, sock)
    except Exception as exc:  # it never reached connection_made
        log.debug("policy: a passed connection could not be served: %s", exc)
        sock.close()
        return False
    return True
