"""A restart that refuses no request and closes no connection: the running daemon
hands its sockets to a successor (SIGUSR2), as nginx and HAProxy do on an upgrade.

Why: Postfix keeps one policy connection per smtpd process. When a daemon stops,
each of those connections is closed, and smtpd finds out only at its next request
(the socket reads end-of-file), which it then retries after
``smtpd_policy_service_retry_delay``, at least 1 s. A stop and a start cost every
smtpd a second, however fast the new process starts. Handed over, the same
connections are served by the new process and smtpd notices nothing.

The steps, over a SOCK_SEQPACKET pair the successor inherits
(``$SMTP_BALANCER_HANDOVER_FD``):
1. SIGUSR2: the running daemon starts the same command again. The new process
   reads the config, connects to Redis and loads its state, then says READY.
   Until then the old one serves as before; if the new one fails (a broken YAML, a
   Redis it cannot reach, a crash in a new release) the old one logs why and goes on.
2. The old one sends its listening sockets (LISTENER), then each connection as soon
   as it has nothing unanswered (CONNECTION); the successor serves each at once.
   A connection still busy after DRAIN_S is closed, as at a stop.
3. The old one closes its metrics listener and sends DONE; the successor binds
   metrics, tells systemd it is the main process now (``MAINPID=``, with
   ``NotifyAccess=all``), and answers ACK; the old one exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, MutableMapping

from policyd import metrics
from policyd.server import DRAIN_S, PolicyServer
from policyd.transport import PolicyConnection
from policyd.worker_link import adopt
from smtp_balancer.observe.metrics import ListenError

log = logging.getLogger("smtp_balancer.policyd")

HANDOVER_ENV = "SMTP_BALANCER_HANDOVER_FD"
READY, LISTENER, CONNECTION, DONE, ACK = b"ready", b"L", b"C", b"D", b"A"
READY_WITHIN_S = 60.0  # the successor's start: imports, config, Redis, the first state load
ACK_WITHIN_S = 10.0
# variables meant for this process only: the successor gets its sockets from us, and
# the watchdog pings it sends are its own once it is the main process
NO_HANDOVER = "SIGUSR2 ignored: with policyd.workers above 1 there is no handover; restart instead"
NOT_INHERITED = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_PID", HANDOVER_ENV)


class HandoverFailed(Exception):
    """The successor did not take over; the running daemon keeps serving."""


def successor_command() -> list[str]:
    """This process's own command line, run by the same interpreter: after an upgrade
    of the installed package, the new release's code."""
    return [sys.executable, *sys.orig_argv[1:]]


def successor_env(env: Mapping[str, str], fd: int) -> dict[str, str]:
    out = {name: value for name, value in env.items() if name not in NOT_INHERITED}
    out[HANDOVER_ENV] = str(fd)
    return out


def handover_link(env: MutableMapping[str, str] = os.environ) -> socket.socket | None:
    """In a successor: its line to the daemon it takes over from; None otherwise."""
    text = env.get(HANDOVER_ENV, "")
    if not (text.isascii() and text.isdigit()):
        return None
    env.pop(HANDOVER_ENV, None)  # not for a successor of our own
    link = socket.socket(fileno=int(text))
    os.set_inheritable(link.fileno(), False)
    return link


async def _receive(link: socket.socket, within_s: float) -> tuple[bytes, list[int]]:
    """One message and the descriptors it carries; (b"", []) when the other side is gone."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bytes, list[int]]] = loop.create_future()

    def readable() -> None:
        try:
            message, fds, _, _ = socket.recv_fds(link, 64, 8)
        except BlockingIOError:
            return
        except OSError:
            message, fds = b"", []
        if not done.done():
            done.set_result((message, fds))

    link.setblocking(False)
    loop.add_reader(link.fileno(), readable)
    try:
        async with asyncio.timeout(within_s):
            return await done
    finally:
        loop.remove_reader(link.fileno())


class Predecessor:
    """The running daemon's side: start a successor and hand it everything."""

    def __init__(
        self,
        server: PolicyServer,
        stop: asyncio.Event,
        close_metrics: Callable[[], None],
        retire: Callable[[], None],
    ) -> None:
        """``close_metrics`` frees the metrics listener for the successor; ``retire``
        stops this process's notifications to systemd (the successor is its main PID)."""
        self.server = server
        self.stop = stop
        self.close_metrics = close_metrics
        self.retire = retire
        self.running = False

    async def hand_over(self) -> None:
        """SIGUSR2. Any failure before the listeners are sent leaves this daemon serving."""
        if self.running or self.stop.is_set():
            log.warning("handover: one is under way or the daemon is stopping; SIGUSR2 ignored")
            return
        self.running = True
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        proc: subprocess.Popen[bytes] | None = None
        try:
            try:
                proc = subprocess.Popen(
                    successor_command(),
                    env=successor_env(os.environ, theirs.fileno()),
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
            finally:
                theirs.close()
            log.info("handover: started pid %d; serving until it is ready", proc.pid)
            await self._ready(ours, proc)
        except (HandoverFailed, OSError) as exc:
            metrics.HANDOVERS.labels("failed").inc()
            log.error("handover failed, still serving: %s", exc)
            if proc is not None and proc.poll() is None:
                proc.kill()  # ours, by its PID: it never took anything over
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            ours.close()
            self.running = False
            return
        await self._give(ours, proc)

    async def _ready(self, link: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        try:
            message, fds = await _receive(link, READY_WITHIN_S)
        except TimeoutError:
            raise HandoverFailed(f"pid {proc.pid} was not ready within {READY_WITHIN_S:.0f}s") from None
        for fd in fds:
            os.close(fd)
        if message != READY:
            await asyncio.sleep(0)
            code = proc.poll()
            ended = f"exited with status {code}" if code is not None else "closed its line"
            raise HandoverFailed(f"pid {proc.pid} {ended} before it was ready (its log says why)")

    async def _give(self, link: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        server = self.server
        given = 0

        def give(conn: PolicyConnection) -> None:
            nonlocal given
            sock = conn.detachable()
            if sock is not None:
                socket.send_fds(link, [CONNECTION], [sock.fileno()])
                conn.let_go()
                given += 1

        try:
            # blocking sends, bounded: thousands of descriptors may outrun the successor's reads
            link.settimeout(ACK_WITHIN_S)
            for listener in server.servers:
                for sock in listener.sockets:
                    socket.send_fds(link, [LISTENER], [sock.fileno()])
            for listener in server.servers:
                listener.close()  # our descriptors only: the successor's keep listening
            await server.let_go_of_connections(give, DRAIN_S, 0.005)
            kept = len(server.open_connections)
            self.close_metrics()
            link.send(DONE)
            message, _ = await _receive(link, ACK_WITHIN_S)
            if message != ACK:
                raise HandoverFailed(f"pid {proc.pid} did not confirm it serves")
            metrics.HANDOVERS.labels("ok").inc()
            self.retire()
            log.info(
                "handover: pid %d serves now (%d connection(s) handed over, %d closed busy); stopping",
                proc.pid,
                given,
                kept,
            )
        except (HandoverFailed, OSError, TimeoutError) as exc:
            # the listeners are gone from here: stop, and let the service manager start one
            metrics.HANDOVERS.labels("failed").inc()
            log.error("handover failed after the listeners were passed, stopping: %s", exc or "no answer")
        finally:
            link.close()
            self.stop.set()


async def take_over(
    server: PolicyServer,
    link: socket.socket,
    serve_metrics: Callable[[], None],
    notify: Callable[[str], None],
) -> int:
    """The successor's side, once its engine has started: serve what the running daemon
    passes, then bind metrics and become the main process. Returns the connections taken."""
    link.send(READY)
    taken = 0
    while True:
        try:
            message, fds = await _receive(link, DRAIN_S + READY_WITHIN_S)
        except TimeoutError:
            message, fds = b"", []
        socks = [socket.socket(fileno=fd) for fd in fds]
        if message == LISTENER:
            await server.serve(socks)
        elif message == CONNECTION:
            for sock in socks:
                taken += await adopt(sock, server.connection_protocol)
        else:
            for sock in socks:
                sock.close()
            break
    if message == DONE:
        serve_metrics()
        notify(f"MAINPID={os.getpid()}")
        with contextlib.suppress(OSError):
            link.send(ACK)
    else:  # the old daemon went away midway: it closed what it had not passed
        log.warning("handover: the previous daemon left before it was done; serving what it passed")
    link.close()
    if not server.servers:
        raise ListenError("policyd.listen", "(handover)", "the previous daemon passed no listening socket")
    log.info("handover: took over %s and %d connection(s)", ", ".join(server.addresses), taken)
    return taken
