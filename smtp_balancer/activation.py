"""systemd socket activation (sd_listen_fds(3)): listening sockets a .socket unit
passed to this process.

systemd binds the socket and keeps it open while the service restarts: clients
connect all along, and wait in the kernel's backlog until the new process
accepts. The protocol: descriptors 3, 4, ... (``LISTEN_FDS`` of them), meant for
the process whose PID is ``LISTEN_PID``. The variables are cleared once taken, so
that a child process (a policyd worker) does not take them again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

SD_LISTEN_FDS_START = 3


def inherited_sockets(env: MutableMapping[str, str] = os.environ) -> list[socket.socket]:
    """The listening sockets passed to this process; [] when none were (not started by
    a .socket unit, or the variables are meant for another process)."""
    count, pid = env.get("LISTEN_FDS", ""), env.get("LISTEN_PID", "")
    if not (count.isascii() and count.isdigit() and pid == str(os.getpid())):
        return []
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + min(int(count), 64)):
        sock = socket.socket(fileno=fd)
        os.set_inheritable(fd, False)
        sock.setblocking(False)
        socks.append(sock)
    return socks
