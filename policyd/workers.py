"""``policyd.workers`` above 1: a supervisor process and that many policy workers.

One Python process decides on one core. The supervisor binds ``policyd.listen``,
accepts every connection and passes it (SCM_RIGHTS over a SOCK_SEQPACKET pair)
to the worker holding the fewest; each worker is a whole policy daemon with its
own engine, mirror and leases, so fleet caps hold as they do across hosts.
Passing, rather than workers accepting on a shared socket, keeps the few
long-lived connections of a Postfix fleet evenly spread: with a shared socket
the kernel may give most of them to one worker.

The supervisor restarts a worker that exits, forwards SIGHUP (each worker
reloads) and SIGTERM, and serves /metrics as the sum of its workers' series
(prometheus_client's multiprocess mode, in a private directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prom_multiprocess

from policyd.handover import NO_HANDOVER
from policyd.listeners import (
    CONNECTION,
    LISTEN_BACKLOG,
    WORKER_CLOSED,
    WORKER_READY,
    address_of,
    bind_listeners,
)
from policyd.server import restart_settings, warn_restart
from smtp_balancer.config import BalancerConfig, ConfigInvalid, load_config
from smtp_balancer.observe.metrics import serve_metrics
from smtp_balancer.observe.ratelimit import LogLimiter
from smtp_balancer.observe.sdnotify import service

log = logging.getLogger("smtp_balancer.policyd")

RESTART_AFTER_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # by failures in a row
HEALTHY_AFTER_S = 60.0  # a worker that ran this long resets the count
READY_WITHIN_S = 30.0
FROZEN_AFTER_S = 10.0  # a ready worker silent this long is killed and started again
STOP_WITHIN_S = 10.0
ACCEPT_RETRY_S = 1.0  # as asyncio's own servers wait after a failed accept()


@dataclass
class Worker:
    slot: int
    proc: asyncio.subprocess.Process | None = None
    watch: asyncio.Task[None] | None = None  # waits for its exit
    control: socket.socket | None = None
    ready: bool = False
    connections: int = 0  # passed to it and not yet closed
    started_at: float = 0.0
    heard_at: float = 0.0  # time.monotonic() of its last message
    failures: int = 0  # exits in a row, each soon after its start
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)


def least_busy(workers: Sequence[Worker]) -> list[Worker]:
    """The ready workers, fewest connections first (the lowest slot on a tie)."""
    ready = [w for w in workers if w.ready and w.control is not None]
    return sorted(ready, key=lambda w: (w.connections, w.slot))


def frozen(workers: Sequence[Worker], now: float) -> list[Worker]:
    """Ready workers that have not said a word for FROZEN_AFTER_S."""
    return [w for w in workers if w.ready and now - w.heard_at > FROZEN_AFTER_S]


def restart_delay(worker: Worker, now: float) -> float:
    """How long to wait before starting ``worker`` again, after it exited at ``now``."""
    if now - worker.started_at >= HEALTHY_AFTER_S:
        worker.failures = 0
    delay = RESTART_AFTER_S[min(worker.failures, len(RESTART_AFTER_S) - 1)]
    worker.failures += 1
    return delay


def worker_argv(path: str, log_level: str, log_format: str, control_fd: int) -> list[str]:
    """A worker's command line: the same daemon, told where its supervisor is."""
    return [
        sys.executable,
        "-m",
        "smtp_balancer.cli.main",
        "-c",
        path,
        "policyd",
        "--log-level",
        log_level,
        "--log-format",
        log_format,
        "--worker-control",
        str(control_fd),
    ]


class Supervisor:
    def __init__(self, config: BalancerConfig, path: str, log_level: str, log_format: str) -> None:
        self.config = config
        self.path = path
        self.log_options = (log_level, log_format)
        self.workers = [Worker(slot) for slot in range(config.policyd.workers)]
        self.listeners: list[socket.socket] = []
        self.notes = LogLimiter(log)
        self.stopping = False
        self.metrics_dir = ""
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        # bound at once (a taken port fails the start), listening once workers are ready:
        # until then clients are refused and retry, as before a single daemon listens
        self.listeners = bind_listeners(self.config.policyd, listen=False)
        loop = asyncio.get_running_loop()
        # signals that come while the workers start: a stop waits for nothing more
        early_stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, early_stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        loop.add_signal_handler(signal.SIGUSR2, lambda: log.warning(NO_HANDOVER))
        try:
            self.metrics_dir = tempfile.mkdtemp(prefix="smtp-balancer-policyd-metrics-")
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)
            serve_metrics(self.config.policyd.metrics_listen, log, "policyd.metrics_listen", registry)
            for worker in self.workers:
                await self._start(worker)
            await self._wait_ready(early_stop)
            if early_stop.is_set():
                return
            for sock in self.listeners:
                sock.listen(LISTEN_BACKLOG)
                loop.add_reader(sock.fileno(), self._accept, sock)
            log.info(
                "policy service listening on %s, %d workers",
                ", ".join(address_of(s) for s in self.listeners),
                len(self.workers),
            )
            status = f"serving policy requests with {len(self.workers)} workers"
            async with service("policyd supervisor", status) as stop:
                if early_stop.is_set():
                    stop.set()
                self._later(self._check_frozen())
                await stop.wait()
        finally:
            await self._stop()

    # -- workers -------------------------------------------------------------------
    async def _start(self, worker: Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        try:
            proc = await asyncio.create_subprocess_exec(
                *worker_argv(self.path, *self.log_options, theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                env=env,
            )
        except OSError as exc:
            ours.close()
            log.error("policy worker %d could not start: %s", worker.slot, exc)
            self._later(self._restart(worker))
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        worker.proc, worker.control, worker.ready, worker.connections = proc, ours, False, 0
        worker.started_at = time.monotonic()
        worker.ready_event.clear()
        asyncio.get_running_loop().add_reader(ours.fileno(), self._from_worker, worker)
        worker.watch = asyncio.get_running_loop().create_task(self._watch(worker, proc))

    async def _wait_ready(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(w.ready_event.wait()) for w in self.workers]
        stopped = asyncio.ensure_future(stop.wait())
        everyone = asyncio.ensure_future(asyncio.gather(*waits))
        await asyncio.wait([everyone, stopped], timeout=READY_WITHIN_S, return_when=asyncio.FIRST_COMPLETED)
        for future in (everyone, stopped, *waits):
            future.cancel()
        if not stop.is_set() and not all(w.ready for w in self.workers):
            late = [str(w.slot) for w in self.workers if not w.ready]
            log.warning(
                "policy workers %s not ready after %.0fs: serving with the others", late, READY_WITHIN_S
            )

    def _from_worker(self, worker: Worker) -> None:
        control = worker.control
        if control is None:
            return
        while True:
            try:
                message = control.recv(64)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:  # the worker is gone; _watch restarts it
                self._forget(worker)
                return
            worker.heard_at = time.monotonic()
            if message == WORKER_CLOSED:
                worker.connections = max(0, worker.connections - 1)
            elif message == WORKER_READY:
                worker.ready = True
                worker.ready_event.set()
                log.info(
                    "policy worker %d (pid %d) ready", worker.slot, worker.proc.pid if worker.proc else 0
                )

    def _forget(self, worker: Worker) -> None:
        if worker.control is not None:
            asyncio.get_running_loop().remove_reader(worker.control.fileno())
            worker.control.close()
            worker.control = None
        worker.ready = False

    async def _watch(self, worker: Worker, proc: asyncio.subprocess.Process) -> None:
        status = await proc.wait()
        self._forget(worker)
        if self.metrics_dir:
            prom_multiprocess.mark_process_dead(proc.pid, self.metrics_dir)
        if self.stopping:
            return
        log.error(
            "policy worker %d (pid %d) exited with status %s; its %d connections are closed",
            worker.slot,
            proc.pid,
            status,
            worker.connections,
        )
        await self._restart(worker)

    async def _check_frozen(self) -> None:
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            for worker in frozen(self.workers, now):
                log.error(
                    "policy worker %d (pid %d) has been silent for %.0fs: its loop is stuck; killing it",
                    worker.slot,
                    worker.proc.pid if worker.proc else 0,
                    now - worker.heard_at,
                )
                worker.ready = False  # no more connections for it
                if worker.proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.kill()  # _watch starts it again

    async def _restart(self, worker: Worker) -> None:
        delay = restart_delay(worker, time.monotonic())
        log.warning("starting policy worker %d again in %.0fs", worker.slot, delay)
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._start(worker)

    def _later(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections ---------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # out of descriptors, say: the connection waits in the backlog, and the
                # listener rests a moment instead of waking the loop again at once
                self.notes.warning("accept failed", "policy supervisor cannot accept: %s", exc)
                loop = asyncio.get_running_loop()
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_RETRY_S, self._resume_accepting, listener)
                return
            with conn:
                self._pass(conn)

    def _resume_accepting(self, listener: socket.socket) -> None:
        if not self.stopping and listener.fileno() >= 0:
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)

    def _pass(self, conn: socket.socket) -> None:
        """Hand ``conn`` to the least busy worker; the supervisor's copy closes after."""
        for worker in least_busy(self.workers):
            assert worker.control is not None
            try:
                socket.send_fds(worker.control, [CONNECTION], [conn.fileno()])
            except OSError as exc:  # its queue is full or it just died: try the next
                self.notes.warning(
                    "pass failed", "policy worker %d takes no connection: %s", worker.slot, exc
                )
                continue
            worker.connections += 1
            return
        self.notes.warning(
            "no worker", "closing a policy connection: no policy worker is ready (the client retries)"
        )

    # -- signals -------------------------------------------------------------------
    def _reload(self) -> None:
        config: BalancerConfig | None = None
        try:
            config = load_config(self.path)
        except ConfigInvalid:
            pass  # each worker says why, and keeps serving its config
        except Exception as exc:
            log.error("config reload: %s: %s", type(exc).__name__, exc)
        if config is not None:
            warn_restart(restart_settings(self.config.policyd, config.policyd))
        # a worker that is not ready yet may lack its handler (SIGHUP would end it); it
        # read the config when it started
        ready = [w for w in self.workers if w.ready and w.proc is not None and w.proc.returncode is None]
        for worker in ready:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        log.info("SIGHUP passed to %d ready policy workers", len(ready))

    async def _stop(self) -> None:
        self.stopping = True
        loop = asyncio.get_running_loop()
        for sock in self.listeners:
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
        for task in self._tasks:  # restarts waiting for their delay
            task.cancel()
        live = [w for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for worker in live:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        watches = [w.watch for w in live if w.watch is not None]
        if watches:
            await asyncio.wait(watches, timeout=STOP_WITHIN_S)
        for worker in live:
            if worker.proc is not None and worker.proc.returncode is None:
                log.warning(
                    "policy worker %d did not stop within %.0fs: killing it", worker.slot, STOP_WITHIN_S
                )
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await asyncio.wait_for(worker.proc.wait(), 5)
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def run_supervisor(config: BalancerConfig, path: str, log_level: str, log_format: str) -> int:
    asyncio.run(Supervisor(config, path, log_level, log_format).run())
    return 0
