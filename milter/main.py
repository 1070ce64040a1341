"""Run the milter: ``smtp-balancer milter -c /etc/smtp-balancer/config.yaml``."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import Milter
from smtp_balancer_milter.app import MilterSettings, milter_factory

import milter as libmilter
from smtp_balancer.config import BalancerConfig
from smtp_balancer.config.base import parse_hostport
from smtp_balancer.engine import ThreadedEngine
from smtp_balancer.engine.holds import HoldReader
from smtp_balancer.observe.metrics import ListenError, serve_metrics
from smtp_balancer.observe.sdnotify import Notifier, keep_pinging
from smtp_balancer.observe.stalls import StallWatch
from smtp_balancer.state.keys import KeySchema

log = logging.getLogger("smtp_balancer.milter")


def libmilter_socket(listen: str) -> str:
    """Our listen syntax to libmilter's: unix:/path stays, inet:host:port -> inet:port@host,
    and inet:[v6]:port -> inet6:port@v6 (libmilter's inet is IPv4 only: it refused ::1
    with "cannot opensocket")."""
    if listen.startswith("unix:"):
        return listen
    host, port = parse_hostport(listen.removeprefix("inet:"))
    return f"inet6:{port}@{host}" if ":" in host else f"inet:{port}@{host}"


def socket_gid(group: str | None) -> int:
    """The group the unix socket is given; -1 leaves it as created."""
    if not group:
        return -1
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenError("milter.socket_group", group, "no such group on this host") from None


def secure_socket(path: str, mode: int, gid: int) -> None:
    """Mode and group on the socket libmilter created, before anyone connects."""
    try:
        if gid != -1:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except OSError as exc:
        raise ListenError("milter.socket_group", f"{path} ({gid})", exc) from exc


def opening_then(listen: str, then: Callable[[], None]) -> None:
    """Have pymilter's runmilter call ``then`` right after it creates the socket.

    runmilter opens the socket and starts serving in one call, with no hook in
    between; the module function it calls is wrapped, so the socket gets its
    mode and group before the first connection is accepted. A socket that cannot
    be opened is a ListenError (one line, exit 5) instead of a traceback.
    """
    opensocket = libmilter.opensocket

    def open_and_secure(rmsock: bool) -> None:
        try:
            opensocket(rmsock)
        except libmilter.error as exc:
            raise ListenError("milter.listen", listen, bind_error(listen) or str(exc)) from exc
        then()

    libmilter.opensocket = open_and_secure


def bind_error(listen: str) -> OSError | None:
    """Why the address cannot be bound, found by trying: libmilter only says that it failed."""
    if listen.startswith("unix:"):
        return None  # a probe would replace the path libmilter was refused
    host, port = parse_hostport(listen.removeprefix("inet:"))
    try:
        family = socket.getaddrinfo(host, port)[0][0]
        with socket.socket(family) as probe:
            probe.bind((host, port))
    except OSError as exc:
        return exc
    return None


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
# the serving thread's word to the main thread that libmilter's loop has returned
LOOP_ENDED = signal.SIGUSR1


def block_stop_signals() -> None:
    """libmilter stops on SIGTERM, SIGINT and SIGHUP from a thread of its own that waits
    for them; every other thread must block them, or the kernel may hand SIGTERM to one
    (the log writer's, the engine's, the metrics server's) and end the process at once:
    no lease given back, the last counts lost. Threads inherit the mask of the thread
    that starts them, so this comes before any thread is started."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {LOOP_ENDED})


def run(config: BalancerConfig) -> int:
    cfg = config.milter
    address = libmilter_socket(cfg.listen)
    # before anything starts: a missing group is fatal
    gid = socket_gid(cfg.socket_group) if address.startswith("unix:") else -1
    notifier = Notifier()

    umask = os.umask(0o022)  # put back once the socket exists (see below)
    os.umask(umask)

    def serving() -> None:
        if address.startswith("unix:"):
            secure_socket(address[5:], int(cfg.socket_mode, 8), gid)
            os.umask(umask)
        notifier.ready("serving")
        # pinged from the engine's loop, which every decision that waits on Redis needs
        engine.spawn(keep_pinging(notifier))
        engine.spawn(StallWatch("milter").watch_loop())

    opening_then(cfg.listen, serving)
    block_stop_signals()  # the CLI did already, before its log thread; a caller may not have
    serve_metrics(cfg.metrics_listen, log, "milter.metrics_listen")
    engine = ThreadedEngine(config)
    # as the policy daemon does: connect, load the script and take the first
    # live-state snapshot before the first message, not inside its budget
    engine.start()
    holds = None
    if config.tenants:  # held tenants' mail goes to the hold queue (engine/holds.py)
        holds = HoldReader(config.tenants, log, moves_to=lambda moves: engine.engine.move_tenants(moves))
        engine.spawn(holds.keep_fresh(lambda: engine.engine.channel, KeySchema(config.redis.prefix)))
    Milter.factory = milter_factory(engine, MilterSettings.from_config(cfg, config.tenants), holds)
    Milter.set_flags(Milter.ADDHDRS + Milter.CHGHDRS + Milter.QUARANTINE)
    if address.startswith("unix:"):
        Path(address[5:]).parent.mkdir(parents=True, exist_ok=True)
        # libmilter creates the socket: this umask keeps it closed until secure_socket runs
        os.umask(0o777)
    log.info("milter listening on %s", address)
    try:
        serve_until_stopped(address, cfg.listen, cfg.timeout_s)
    finally:
        log.info("milter stopping: giving leases back, writing the last counts")
        engine.close()
    return 0


def serve_until_stopped(address: str, listen: str, timeout_s: float) -> None:
    """libmilter's loop in a thread of its own; this (the main) thread takes the stop
    signals, sets libmilter's stop flag and wakes its listener with a connection.
    ``address``: libmilter's words for ``listen`` (the config's, which the wake uses).

    libmilter's listener looks at its stop flag only between waits of 5 s for a
    connection (MI_CHK_TIME), so a stop left to libmilter's own signal thread took up
    to 5 s: each restart kept Postfix on milter_default_action that long. Linux gives
    a signal sent to the process to its main thread first when that thread waits for
    it, and this thread waits for nothing else: the stop comes here.
    """
    failed: list[BaseException] = []
    main = threading.main_thread().ident
    assert main is not None

    def serve() -> None:
        try:
            Milter.runmilter("smtp-balancer", address, timeout_s)
        except BaseException as exc:  # handed to the main thread: a ListenError is exit 5
            failed.append(exc)
        finally:
            signal.pthread_kill(main, LOOP_ENDED)

    loop = threading.Thread(target=serve, name="libmilter")
    loop.start()
    while loop.is_alive():
        got = signal.sigwaitinfo(STOP_SIGNALS | {LOOP_ENDED})
        if got.si_signo == LOOP_ENDED:  # or a stray SIGUSR1, which changes nothing
            loop.join(0.5)
            continue
        log.info("milter stopping on %s", signal.Signals(got.si_signo).name)
        # smfi_stop sets the flag and, in newer libmilters, waits for the listener to let
        # go of its socket: not in this thread
        threading.Thread(target=libmilter.stop, name="libmilter-stop", daemon=True).start()
        while loop.is_alive():
            wake_listener(listen)  # until it has seen the flag: it may look before it is set
            loop.join(0.05)
    if failed:
        raise failed[0]


def wake_listener(listen: str) -> None:
    """Connect to the milter's own socket (``milter.listen``: unix:/path or
    inet:host:port) and hang up: libmilter's listener returns from its wait, and the
    session it starts ends at once, with no command and so nothing decided (pymilter's
    close callback finds no milter object and returns)."""
    with contextlib.suppress(OSError):
        if listen.startswith("unix:"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1.0)
                sock.connect(listen.removeprefix("unix:"))
            return
        host, port = parse_hostport(listen.removeprefix("inet:"))
        if host in ("0.0.0.0", "::"):  # every address: loopback is one of them
            host = "::1" if ":" in host else "127.0.0.1"
        socket.create_connection((host, port), timeout=1.0).close()
