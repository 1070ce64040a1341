"""One policy connection as an asyncio protocol: bytes in and out around a
ConnectionState (sans I/O), the idle timer, flow control, and how long a request
has waited (TCP_INFO), which tells an abandoned request from a fresh one.

``PolicyConnection`` has the methods asyncio calls on a protocol but does not
inherit ``asyncio.Protocol`` (asyncio only calls them): a compiled class of its
own, its attributes are fields and its methods native calls on the request path,
where a subclass of asyncio's Python class looks each up in dictionaries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Final

from mypy_extensions import mypyc_attr

from policyd import metrics
from policyd.connection import ConnectionState
from policyd.loop import noted_selector
from policyd.protocol import ProtocolError, RequestParser, Truncated
from policyd.session import DUNNO, READ_ATTRIBUTES, Client, Later
from smtp_balancer.observe.logs import fields

if TYPE_CHECKING:
    from policyd.server import PolicyServer

log = logging.getLogger("smtp_balancer.policyd")
# read per request: statics, where time.monotonic is a lookup in the module each time
_monotonic: Final = time.monotonic
_os_write: Final = os.write

# struct tcp_info (linux/tcp.h): tcpi_last_data_recv, milliseconds, after 8 one-byte
# fields and 9 + 2 32-bit ones; the struct has been longer than this since Linux 2.6
TCP_INFO_SIZE: Final = 104
TCP_LAST_DATA_RECV: Final = 52
READ_SIZE: Final = 256 * 1024  # asyncio's selector transports read at most this much per call
FIRST_REQUEST_S: Final = 0.5  # at a stop: how long a connection just accepted gets to send its request


@mypyc_attr(allow_interpreted_subclasses=True)  # tests count the kernel asks in a subclass
class PolicyConnection(Client):
    """The asyncio shim around one ConnectionState: bytes in and out, and the one
    wait for a Pending draw as a task while reading is paused. Made by
    ``PolicyServer.connection_protocol``, which asyncio is given as the factory."""

    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self.state = ConnectionState(
            lambda request: server.answer_now(request, self), RequestParser(keep=READ_ATTRIBUTES)
        )
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a task is settling the waiting request
        self.write_paused = False
        self.peer = "unix"
        self.loop = asyncio.get_running_loop()
        # when the loop's select() calls started (policyd/loop.py); its clock, time.monotonic,
        # is the loop's (BaseEventLoop.time), read here without a Python call
        self.noted = noted_selector(self.loop)
        self.last_active = time.monotonic()
        self.idle: asyncio.TimerHandle | None = None
        self.counted = False
        self.heard = False  # any bytes received yet
        # since when the transport has read all along (inf while paused): see arrived_within
        self.reading_since = float("inf")
        # the socket's descriptor, written directly while asyncio buffers nothing (_write)
        self.fd = -1
        self.backlog = False  # asyncio's transport may hold bytes: write through it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        self.peer = str(transport.get_extra_info("peername") or "unix")
        if server.connections >= server.max_connections:
            metrics.REFUSED_CONNECTIONS.inc()
            server.notes.warning(
                "refused connection",
                "refusing connection from %s: max_connections %d reached",
                self.peer,
                server.connections,
            )
            transport.close()
            return
        self.counted = True
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        server.connections += 1
        server.open_connections.add(self)
        metrics.CONNECTIONS.inc()
        self.reading_since = time.monotonic()
        self.idle = self.loop.call_later(server.config.idle_timeout_s, self._idle_check)

    def data_received(self, data: bytes) -> None:
        self.last_active = _monotonic()
        self.heard = True
        if len(data) >= READ_SIZE:
            # a full read may have left older bytes behind: trust no age bound until
            # a select() that starts after this
            self.reading_since = max(self.reading_since, self.last_active)
        try:
            replies = self.state.receive_data(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        self._send(replies, reading=True)

    def eof_received(self) -> bool:
        try:
            replies = self.state.receive_eof()
        except ProtocolError as exc:
            self._protocol_error(exc)
            return True
        self._send(replies)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.fd = -1  # asyncio closes the socket next: its number may be another's soon
        self.server.connection_gone()
        self.server.open_connections.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        if self.counted:
            self.counted = False
            self.server.connections -= 1
            metrics.CONNECTIONS.dec()
        if exc is not None:
            log.debug("policy connection from %s lost: %s", self.peer, exc)

    def pause_writing(self) -> None:
        # a client that sends and never reads: stop reading until it catches up
        self.write_paused = True
        if self.transport is not None:
            self._pause_reading(self.transport)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.busy:
            self._resume_reading(self.transport)

    def _pause_reading(self, transport: asyncio.Transport) -> None:
        transport.pause_reading()
        self.reading_since = float("inf")

    def _resume_reading(self, transport: asyncio.Transport) -> None:
        transport.resume_reading()
        self.reading_since = time.monotonic()

    def settled(self) -> bool:
        """Nothing unanswered: no request waiting or queued, and no bytes of one
        buffered or still in the socket."""
        state = self.state
        if self.busy or state.waiting is not None or state.queue or state.mid_request:
            return False
        if not self.heard and time.monotonic() - self.last_active < FIRST_REQUEST_S:
            return False  # just accepted: its first request (Exim's only one) is on its way
        return self._unread() != "data"

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def detachable(self) -> socket.socket | None:
        """For a handover (policyd/handover.py): the socket, with reading paused, if the
        connection is between requests (nothing read of a next one, nothing unanswered,
        every reply written); None while it is not. Unread bytes stay in the kernel for
        the successor."""
        transport, state = self.transport, self.state
        if transport is None or transport.is_closing() or self.busy:
            return None
        if state.waiting is not None or state.queue or state.mid_request or state.eof:
            return None
        if transport.get_write_buffer_size():
            return None
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None
        self._pause_reading(transport)
        return sock

    def let_go(self) -> None:
        """The successor holds the connection now: close this process's descriptor only
        (no shutdown, no goodbye to the client)."""
        self.fd = -1
        if self.transport is not None:
            self.transport.abort()

    # -- session.Client: does the client of the request being answered still wait? --
    def gone(self) -> bool:
        """The client closed its side already: a peek finds end-of-file (or an error)."""
        return self._unread() in ("eof", "closed")

    def _unread(self) -> str:
        """What the socket holds that asyncio has not read: "data", "eof", "nothing",
        or "closed" (no transport, or a reset)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return "closed"
        sock = transport.get_extra_info("socket")
        if sock is None:
            return "nothing"
        # a socket object on the same descriptor, detached after: asyncio's own wrapper
        # does not offer recv with flags
        peek = socket.socket(sock.family, sock.type, sock.proto, sock.fileno())
        try:
            return "data" if peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) else "eof"
        except BlockingIOError:
            return "nothing"
        except OSError:
            return "closed"  # reset by the peer
        finally:
            peek.detach()

    def waited_s(self) -> float | None:
        """How long ago the kernel received the request's last bytes, from TCP_INFO
        (a frozen daemon reads old requests as if new); None on a unix socket."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
        except OSError:
            return None
        if len(info) < TCP_LAST_DATA_RECV + 4:
            return None
        return int.from_bytes(info[TCP_LAST_DATA_RECV : TCP_LAST_DATA_RECV + 4], sys.byteorder) / 1000

    def arrived_within(self, seconds: float) -> bool:
        """The bytes being answered were read after the previous select() started
        (policyd/loop.py), if this transport read all along since before then."""
        if self.noted is None:
            return False
        started = self.noted.previous
        if self.reading_since >= started:
            return False
        return _monotonic() - started < seconds

    def _send(self, replies: list[bytes], reading: bool = False) -> None:
        """``reading``: called from data_received, where the transport cannot be closing
        (asyncio stops reading a transport it closes), so it is not asked: one Python
        call less per request."""
        transport = self.transport
        if transport is None or (not reading and transport.is_closing()):
            return
        if replies:
            self._write(transport, replies[0] if len(replies) == 1 else b"".join(replies))
        state = self.state
        if state.waiting is not None and not self.busy:
            self.busy = True
            self._pause_reading(transport)
            self.loop.create_task(self._settle(state.waiting))
        elif state.finished:
            self._finish(transport)

    def _write(self, transport: asyncio.Transport, payload: bytes) -> None:
        """A reply, written straight to the socket: between a request and its answer
        (Postfix and Exim wait for it) the kernel's buffer is empty, and asyncio's
        write is a Python frame per reply. What the socket does not take, and every
        write after it until asyncio's buffer is empty again, goes through the
        transport, in order; so does one that fails, for asyncio to report and close."""
        if self.fd < 0:  # no socket of its own (a stand-in transport): asyncio's way
            transport.write(payload)
            return
        if not self.backlog:
            try:
                written = _os_write(self.fd, payload)
            except (BlockingIOError, InterruptedError):
                written = 0
            except OSError:
                transport.write(payload)  # the same error there: asyncio's connection_lost
                return
            if written == len(payload):
                return
            payload = payload[written:]
        transport.write(payload)
        self.backlog = transport.get_write_buffer_size() > 0

    @staticmethod
    def _finish(transport: asyncio.Transport) -> None:
        """Shut our side now: close() alone takes effect a loop turn later, and Exim
        takes its answer only at end-of-file. A daemon stopped (or starved) in that turn
        would leave Exim to time out with the answer in hand, its route's unit counted."""
        with contextlib.suppress(OSError):  # a reset connection: nothing to tell the client
            transport.write_eof()  # shuts the socket at once when nothing is buffered
        transport.close()

    async def _settle(self, later: Later) -> None:
        """Settle the waiting request and write its answer in the step that decided it
        (a done callback would run a loop turn later: see ``_finish``)."""
        try:
            action = await self.server.answer_later(later, self)
        except asyncio.CancelledError:  # the daemon is stopping: its connections go with it
            self.busy = False
            raise
        except Exception:  # never leave a client without an answer; the MTA default applies
            log.exception("policy decision failed; answering DUNNO")
            action = DUNNO
        self._answered(action)

    def _answered(self, action: str) -> None:
        self.busy = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the client is gone: decide nothing more for it
        replies = self.state.answered(action)
        if not self.write_paused:
            self._resume_reading(transport)
        self._send(replies)

    def _idle_check(self) -> None:
        timeout = self.server.config.idle_timeout_s
        idle_for = time.monotonic() - self.last_active
        if idle_for < timeout or self.busy:
            self.idle = self.loop.call_later(max(timeout - idle_for, 0.1), self._idle_check)
            return
        if self.state.mid_request:
            self._protocol_error(Truncated(f"no complete request within {timeout}s"))
        elif self.transport is not None:
            self.transport.close()

    def _protocol_error(self, exc: ProtocolError) -> None:
        metrics.PROTOCOL_ERRORS.labels(exc.kind).inc()
        self.server.notes.warning(
            f"protocol error ({exc.kind})",
            "closing policy connection: %s",
            exc,
            extra=fields(peer=self.peer, kind=exc.kind, error=str(exc)),
        )
        if self.transport is not None:
            self.transport.close()
