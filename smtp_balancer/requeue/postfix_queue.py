"""The Postfix side of moving mail: the deferred queue, postsuper, postkick, master.cf.

Traps (seen on Postfix 3.7, see DESIGN.md):
- only ever ``postsuper -r ... deferred``: requeueing a message in the active
  queue and kicking pickup delivered it twice;
- a requeued message waits in maildrop until pickup's 60 s timer, unless
  ``postkick public pickup W`` wakes it;
- postsuper runs as root.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from smtp_balancer import postconf
from smtp_balancer.requeue.wiring import wiring_problems

REQUEUED = re.compile(r"^postsuper: ([0-9A-Za-z]+): requeued$", re.M)
RELEASED = re.compile(r"^postsuper: ([0-9A-Za-z]+): released from hold$", re.M)
QUEUE_ID = re.compile(r"^[0-9A-Za-z]{6,32}$")
COMMAND_TIMEOUT_S = 60


class PostfixQueueError(RuntimeError):
    pass


class PostfixQueue:
    def __init__(self, config_dir: str) -> None:
        self.config_dir = config_dir
        self.queue_dir = Path(self._postconf("-h", "queue_directory").strip())

    def _run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostfixQueueError(f"{argv[0]}: {exc}") from exc

    def _postconf(self, *args: str) -> str:
        try:
            return postconf.run(self.config_dir, *args)
        except postconf.PostconfError as exc:
            raise PostfixQueueError(str(exc)) from exc

    def wiring(self, table: str) -> list[str]:
        """Why mail moved off its FILTER would not reach the table's route (wiring.py)."""
        try:
            main = postconf.main_values(self.config_dir, ["rewrite_service_name", "transport_maps"])
            options = postconf.master_options(self.config_dir)
            services = postconf.master_services(self.config_dir)
        except postconf.PostconfError as exc:
            raise PostfixQueueError(str(exc)) from exc
        return wiring_problems(table, main, options, services)

    def deferred(self) -> Iterator[tuple[str, Path, tuple[int, int, int]]]:
        """(queue id, path, (inode, mtime ns, size)) of every deferred message, hashed
        subdirectories included. qmgr sets a deferred file's mtime to its next retry
        and rewrites records in place: the triple changes whenever the file does."""
        stack = [self.queue_dir / "deferred"]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False) and QUEUE_ID.match(entry.name):
                        st = entry.stat(follow_symlinks=False)
                        yield entry.name, Path(entry.path), (st.st_ino, st.st_mtime_ns, st.st_size)
                except FileNotFoundError:
                    continue  # delivered or moved meanwhile

    def transports(self) -> set[str]:
        """Service names master.cf defines (postconf -M): an endpoint missing here is unplumbed."""
        try:
            return {entry.partition("/")[0] for entry in postconf.master_services(self.config_dir)}
        except postconf.PostconfError as exc:
            raise PostfixQueueError(str(exc)) from exc

    def requeue(self, queue_ids: Iterable[str]) -> set[str]:
        """``postsuper -r - deferred``: only messages still in the deferred queue move.
        Returns the ids postsuper reports requeued."""
        ids = [q for q in queue_ids if QUEUE_ID.match(q)]
        if not ids:
            return set()
        out = self._run(
            "postsuper", "-c", self.config_dir, "-r", "-", "deferred", stdin="\n".join(ids) + "\n"
        )
        if out.returncode != 0:
            raise PostfixQueueError(f"postsuper -r: {out.stderr.strip() or out.returncode}")
        return set(REQUEUED.findall(out.stderr)) & set(ids)

    def held(self) -> list[tuple[str, str]]:
        """(queue id, sender) of every message in the hold queue (``postqueue -j``)."""
        out = self._run("postqueue", "-c", self.config_dir, "-j")
        if out.returncode != 0:
            raise PostfixQueueError(f"postqueue -j: {out.stderr.strip() or out.returncode}")
        found = []
        for line in out.stdout.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("queue_name") == "hold":
                queue_id, sender = str(entry.get("queue_id", "")), str(entry.get("sender", ""))
                if QUEUE_ID.match(queue_id):
                    found.append((queue_id, sender))
        return found

    def release(self, queue_ids: Iterable[str]) -> set[str]:
        """``postsuper -H -``: the messages leave the hold queue. Returns the ids released."""
        ids = [q for q in queue_ids if QUEUE_ID.match(q)]
        if not ids:
            return set()
        out = self._run("postsuper", "-c", self.config_dir, "-H", "-", stdin="\n".join(ids) + "\n")
        if out.returncode != 0:
            raise PostfixQueueError(f"postsuper -H: {out.stderr.strip() or out.returncode}")
        return set(RELEASED.findall(out.stderr)) & set(ids)

    def kick_pickup(self) -> None:
        """Requeued mail waits in maildrop for pickup's timer (60 s) otherwise."""
        out = self._run("postkick", "-c", self.config_dir, "public", "pickup", "W")
        if out.returncode != 0:
            raise PostfixQueueError(f"postkick pickup: {out.stderr.strip()}")
