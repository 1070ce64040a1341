"""systemd's service notification protocol (sd_notify), for Type=notify units with WatchdogSec=.

READY=1 once a daemon serves; WATCHDOG=1 from its working loop, at half the
watchdog interval systemd gives in $WATCHDOG_USEC. A frozen daemon stops pinging
and systemd restarts it. Without $NOTIFY_SOCKET (not under systemd) nothing is sent.
The protocol is one datagram of KEY=value lines: a few lines, no library needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Mapping

from smtp_balancer.observe.stalls import StallWatch

log = logging.getLogger("smtp_balancer.sdnotify")


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is Linux's abstract namespace
        self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        # ping twice per interval, as sd_watchdog_enabled(3) advises
        self.interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and ours else None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *states: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(states).encode(), self.address)
            return True
        except OSError as exc:
            if not self._failed:  # once: a watchdog that cannot be reached will say so itself
                self._failed = True
                log.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"), exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def ping(self) -> bool:
        return self.send("WATCHDOG=1") if self.interval_s is not None else False

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def retire(self) -> None:
        """Another process is the service's main process now (a policy daemon's
        successor): send nothing more, not even STOPPING=1 on the way out."""
        self.address = ""
        self.interval_s = None


async def keep_pinging(notifier: Notifier) -> None:
    """WATCHDOG=1 from this event loop for as long as it runs: a blocked loop stops it."""
    if notifier.interval_s is None:
        return
    while True:
        notifier.ping()
        await asyncio.sleep(notifier.interval_s)


@contextlib.asynccontextmanager
async def service(daemon: str, status: str, notifier: Notifier | None = None) -> AsyncIterator[asyncio.Event]:
    """An asyncio daemon's life under systemd: READY=1 with ``status``, WATCHDOG=1 from
    this event loop, and an Event that SIGTERM or SIGINT sets; STOPPING=1 on the way out.
    With or without systemd, the loop's own stalls are measured (observe/stalls.py)."""
    notifier = notifier or Notifier()
    notifier.ready(status)
    pinger = asyncio.create_task(keep_pinging(notifier))  # systemd's watchdog sees a frozen loop
    watch = asyncio.create_task(StallWatch(daemon).watch_loop())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        notifier.stopping()
        pinger.cancel()
        watch.cancel()
