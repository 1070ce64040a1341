"""Follow a growing log file across rotation, truncation and restarts, line by line.

The position is (inode, offset, tail): ``tail`` is the last bytes before
``offset``, so a restart can tell the same file from a rewritten one, and a
copytruncate rotation can be bridged by finding the copy that ends the way we
left off. While an old file (rotated away, or the copy) is still being read, the
position names it too, with its own offset and tail: a restart finishes it first.
Only complete lines are returned; a half-written last line waits. The caller
saves the position only once it has applied the lines it got, so a restart
neither re-counts nor skips.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("smtp_balancer.feedback")

TAIL_BYTES = 64
READ_CHUNK = 1 << 20
MAX_LINE = 64 * 1024  # a longer "line" is garbage: it is cut and reported, never buffered forever


@dataclass(frozen=True)
class Position:
    inode: int
    offset: int
    tail: bytes = b""
    # the old file still being read before this one (0: none), where its lines stop
    old_inode: int = 0
    old_offset: int = 0
    old_tail: bytes = b""

    def encode(self) -> str:
        main = f"{self.inode} {self.offset} {self.tail.hex()}"
        return f"{main} {self.old_inode} {self.old_offset} {self.old_tail.hex()}" if self.old_inode else main

    @classmethod
    def decode(cls, text: str) -> Position:
        """Raises ValueError on anything but what encode() writes (and its older
        forms: no tail, no old file)."""
        parts = text.split(" ")
        if len(parts) == 2:
            parts.append("")
        if len(parts) == 3:
            return cls(int(parts[0]), int(parts[1]), bytes.fromhex(parts[2]))
        if len(parts) == 6:
            numbers = int(parts[0]), int(parts[1]), int(parts[3]), int(parts[4])
            tails = bytes.fromhex(parts[2]), bytes.fromhex(parts[5])
            return cls(numbers[0], numbers[1], tails[0], numbers[2], numbers[3], tails[1])
        raise ValueError(f"not a log position: {text[:80]!r}")


@dataclass
class OldFile:
    """A file to finish before the one at our path, and how far its lines were handed out."""

    file: BinaryIO
    inode: int
    offset: int
    tail: bytes


@dataclass(frozen=True)
class Note:
    """Something the caller should log: event is rotation, truncation, lost, or waiting."""

    event: str
    text: str


class LogFollower:
    def __init__(self, path: str | Path, position: Position | None = None, start_at: str = "end") -> None:
        self.path = Path(path)
        self._file: BinaryIO | None = None
        self._inode = 0
        self._offset = 0  # end of the last complete line handed out
        self._pending = b""  # bytes after _offset already read
        self._tail = b""
        self._queue: list[OldFile] = []  # old files still to finish, the one being read first
        self._ready: list[str] = []  # the unterminated last line of a finished old file
        self.notes: list[Note] = []  # what happened, for the log and metrics
        # while old files are read: the waiting main file's first bytes and largest
        # size seen, so a copytruncate of it before we read any of it is noticed
        self._main_head = b""
        self._main_size = 0
        self._open(position, start_at)

    # -- public -------------------------------------------------------------------
    @property
    def reading_rotated(self) -> bool:
        """True while the rest of a rotated (or copied) file is being read."""
        return bool(self._queue)

    @property
    def position(self) -> Position:
        if not self._queue:
            return Position(self._inode, self._offset, self._tail)
        old = self._queue[0]
        return Position(self._inode, self._offset, self._tail, old.inode, old.offset, old.tail)

    def read_lines(self, max_lines: int = 1000) -> list[str]:
        """Up to ``max_lines`` complete new lines, without their newline."""
        lines: list[str] = []
        self._notice_rename()
        if self._queue:
            self._watch_waiting_main()
        while len(lines) < max_lines:
            if self._file is None and not self._reopen():
                break
            got = self._take(max_lines - len(lines))
            lines.extend(got)
            if got:
                continue
            if not self._read_more() and not self._switch_if_rotated():
                break
        return lines

    def close(self) -> None:
        for old in self._queue:
            old.file.close()
        self._queue.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- opening and resuming ------------------------------------------------------
    def _open(self, position: Position | None, start_at: str) -> None:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            self.notes.append(Note("waiting", f"{self.path} does not exist yet; waiting for it"))
            return
        st = os.fstat(f.fileno())
        if position is None:
            self._attach(f, st.st_ino, st.st_size if start_at == "end" else 0)
            if start_at == "end":
                self._tail = self._read_tail(f, st.st_size)
            return
        if position.old_inode:
            self._resume_old(position.old_inode, position.old_offset, position.old_tail)
        if st.st_ino == position.inode:
            if st.st_size >= position.offset and self._read_tail(f, position.offset) == position.tail:
                self._attach(f, st.st_ino, position.offset, position.tail)
                return
            # same file, shorter or different: copytruncate happened while we were down
            self._attach(f, st.st_ino, 0)
            self._bridge_copy(position)
            return
        # a new file: the one we read was renamed (and maybe a copy exists); finish it first
        self._attach(f, st.st_ino, 0)
        self._resume_old(position.inode, position.offset, position.tail)

    def _resume_old(self, inode: int, offset: int, tail: bytes) -> None:
        """Queue the old file of this inode at ``offset``, if it is still ours to read."""
        old = self._find_by_inode(inode)
        if old is not None and self._read_tail(old, offset) == tail:
            old.seek(offset)
            self._queue.append(OldFile(old, inode, offset, tail))
            self.notes.append(
                Note("rotation", f"resuming rotated file at offset {offset} before {self.path}")
            )
            return
        if old is not None:
            old.close()
        self.notes.append(
            Note(
                "lost",
                f"the file read before the restart (inode {inode}) is gone; "
                f"lines written to it after offset {offset} were not seen",
            )
        )

    def _attach(self, f: BinaryIO, inode: int, offset: int, tail: bytes = b"") -> None:
        f.seek(offset)
        self._file, self._inode, self._offset, self._tail, self._pending = f, inode, offset, tail, b""
        self._main_head, self._main_size = b"", 0  # watched afresh from here

    def _reopen(self) -> bool:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return False
        self._attach(f, os.fstat(f.fileno()).st_ino, 0)
        return True

    @staticmethod
    def _read_tail(f: BinaryIO, offset: int) -> bytes:
        start = max(0, offset - TAIL_BYTES)
        f.seek(start)
        return f.read(offset - start)

    def _siblings(self) -> list[Path]:
        # logrotate names: mail.log.1, mail.log-20261124, maillog.0 ...
        name = self.path.name
        try:
            return sorted(p for p in self.path.parent.iterdir() if p.name.startswith(name) and p != self.path)
        except OSError:
            return []

    def _find_by_inode(self, inode: int) -> BinaryIO | None:
        for p in self._siblings():
            try:
                if p.stat().st_ino == inode:
                    return p.open("rb")
            except OSError:
                continue
        return None

    def _find_copy(self, matches: Callable[[BinaryIO, os.stat_result], bool]) -> tuple[BinaryIO, str] | None:
        """The first sibling file that ``matches`` (open, for the caller to keep), and its name."""
        for p in self._siblings():
            try:
                f = p.open("rb")
            except OSError:
                continue
            if matches(f, os.fstat(f.fileno())):
                return f, p.name
            f.close()
        return None

    def _bridge_copy(self, before: Position) -> None:
        """After copytruncate: read what we missed from the copy that ends like our tail."""
        found = self._find_copy(
            lambda f, st: st.st_size >= before.offset and self._read_tail(f, before.offset) == before.tail
        )
        if found is None:
            self.notes.append(
                Note(
                    "truncation",
                    f"{self.path} was truncated and no copy ends where we stopped; reading from 0",
                )
            )
            return
        f, name = found
        f.seek(before.offset)
        self._queue.insert(0, OldFile(f, os.fstat(f.fileno()).st_ino, before.offset, before.tail))
        self.notes.append(Note("truncation", f"{self.path} was truncated; read the rest from {name}"))

    def _watch_waiting_main(self) -> None:
        """While an old file is read, notice a copytruncate of the main file we have
        not read yet (offset 0: no tail to compare) by its size and first bytes."""
        if self._file is None or self._offset:
            return
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        head = os.pread(fd, TAIL_BYTES, 0)
        seen = self._main_head
        if size >= self._main_size and head[: len(seen)] == seen:
            self._main_head, self._main_size = head, size
            return
        # shrunk, or rewritten from the start: its earlier lines are in a copy, if any
        self._main_head, self._main_size = head, size
        if not seen:
            return
        queued = {old.inode for old in self._queue}
        found = self._find_copy(
            lambda f, st: st.st_ino not in queued and st.st_size >= len(seen) and f.read(len(seen)) == seen
        )
        if found is None:
            self.notes.append(
                Note(
                    "truncation", f"{self.path} was truncated before we read it and no copy starts as it did"
                )
            )
            return
        f, name = found
        f.seek(0)
        self._queue.append(OldFile(f, os.fstat(f.fileno()).st_ino, 0, b""))
        self.notes.append(
            Note("truncation", f"{self.path} was truncated before we read it; read it from {name}")
        )

    # -- reading -----------------------------------------------------------------------
    def _current(self) -> BinaryIO | None:
        return self._queue[0].file if self._queue else self._file

    def _take(self, limit: int) -> list[str]:
        out: list[str] = []
        while self._ready and len(out) < limit:
            out.append(self._ready.pop(0))
        # one pass with an index, one slice at the end: no re-slicing per line
        buf, pos = self._pending, 0
        while len(out) < limit:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos <= MAX_LINE:
                    break
                nl = pos + MAX_LINE - 1  # cut an endless line; the parser counts it as garbage
            out.append(buf[pos : nl + 1].rstrip(b"\r\n").decode("utf-8", errors="replace"))
            pos = nl + 1
        if pos:  # an old file's lines move its own offset, not the main file's
            taken = buf[max(0, pos - TAIL_BYTES) : pos]
            if self._queue:
                old = self._queue[0]
                old.offset += pos
                old.tail = (old.tail + taken)[-TAIL_BYTES:]
            else:
                self._offset += pos
                self._tail = (self._tail + taken)[-TAIL_BYTES:]
        self._pending = buf[pos:]
        return out

    def _read_more(self) -> bool:
        f = self._current()
        if f is None:
            return False
        if f is self._file and not self._pending and self._rewritten():
            # truncated and written again past our offset since the last read
            before = self.position
            self._attach(self._file, self._inode, 0)
            self._bridge_copy(before)
            return True
        chunk = f.read(READ_CHUNK)
        if chunk:
            self._pending += chunk
            return True
        if self._queue:
            # an old file is finished: a partial last line there is complete by now
            self._queue.pop(0).file.close()
            if self._pending:
                self._ready.append(self._pending.decode("utf-8", errors="replace"))
                self._pending = b""
            if self._file is not None:
                self._file.seek(self._offset)
            return True
        return False

    def _switch_if_rotated(self) -> bool:
        """At EOF: move to a new file at our path, or back to 0 after a truncation."""
        assert self._file is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False  # renamed, new one not created yet: keep the old one open
        if st.st_ino != self._inode:
            return self._follow_new_file()
        if st.st_size < self._offset:
            before = self.position
            self._attach(self._file, self._inode, 0)
            self._bridge_copy(before)
            return True
        return False

    def _follow_new_file(self) -> bool:
        """Our path names a new file: queue the one we read, to finish first (a writer
        may still be appending to it; its unterminated last line comes out when it is
        done), and wait at 0 of the new one."""
        assert self._file is not None
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return False
        self.notes.append(Note("rotation", f"{self.path} was rotated; following the new file"))
        self._queue.append(OldFile(self._file, self._inode, self._offset, self._tail))
        self._file, self._inode, self._offset, self._tail = f, os.fstat(f.fileno()).st_ino, 0, b""
        self._main_head, self._main_size = b"", 0
        return True

    def _notice_rename(self) -> None:
        """A rename is noticed at every call, not only at the old file's end: from then
        on the new file is watched while the old one is finished."""
        if self._file is None or self._queue:
            return
        try:
            if self.path.stat().st_ino != self._inode:
                self._follow_new_file()
        except FileNotFoundError:
            pass  # renamed, the new one not created yet

    def _rewritten(self) -> bool:
        """Do the bytes before our offset still read as we left them? (one 64-byte pread)"""
        if self._file is None or not self._tail:
            return False
        got = os.pread(self._file.fileno(), len(self._tail), self._offset - len(self._tail))
        return got != self._tail
