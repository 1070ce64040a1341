"""Who holds a feedback instance, and whether that holder is a dead process on this host.

The holder value names the process (``host= pid= boot= pidns= run=``). A daemon
restarted after a crash finds its predecessor's value until the lease runs out;
when the value names this kernel's boot and this PID namespace, and no process
has that PID, the predecessor is dead and the instance is taken at once. Any
other holder, a live one or one on another host, is waited for.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return ""


def this_process() -> str:
    """The holder value for this process: a new ``run`` each call, so two daemons in one
    process (tests) are told apart."""
    fields = {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "boot": _read("/proc/sys/kernel/random/boot_id"),
        "pidns": _pid_namespace(),
        "run": secrets.token_hex(4),
    }
    return " ".join(f"{k}={v or '-'}" for k, v in fields.items())


def fields_of(holder: str) -> dict[str, str]:
    """``key=value`` words of a holder value; anything else in it is ignored."""
    return dict(word.split("=", 1) for word in holder.split() if "=" in word)


def dead_here(holder: str, here: str) -> bool:
    """Whether ``holder`` names a process of this boot and PID namespace (as ``here``, our
    own holder value, does) that is no longer running. A value we cannot judge is not dead."""
    theirs, ours = fields_of(holder), fields_of(here)
    # a PID means this process only in the same boot and PID namespace; unknown is not the same
    same = all(ours.get(k, "-") not in ("", "-") and theirs.get(k) == ours[k] for k in ("boot", "pidns"))
    pid = theirs.get("pid", "")
    if not same or not pid.isdigit() or int(pid) <= 0:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it runs, as another user
        return False
    return False
