"""The log follower on real files: growth, half lines, rotation, copytruncate, restarts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from smtp_balancer.feedback.follower import LogFollower, Position


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def drain(f: LogFollower) -> list[str]:
    out: list[str] = []
    while batch := f.read_lines(3):
        out.extend(batch)
    return out


def test_reads_complete_lines_and_waits_for_a_half_written_one(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = LogFollower(log, start_at="beginning")
    append(log, "one\ntwo\nthr")
    assert drain(f) == ["one", "two"]
    append(log, "ee\n")
    assert drain(f) == ["three"]
    assert f.position.offset == log.stat().st_size


def test_start_at_end_skips_history(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("old\n")
    f = LogFollower(log, start_at="end")
    append(log, "new\n")
    assert drain(f) == ["new"]


def test_rename_rotation_finishes_the_old_file_then_follows_the_new(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("a1\n")
    f = LogFollower(log, start_at="beginning")
    assert drain(f) == ["a1"]
    append(log, "a2\n")
    log.rename(tmp_path / "mail.log.1")
    append(tmp_path / "mail.log.1", "a3\n")  # the writer had not reopened yet
    append(log, "b1\n")
    assert drain(f) == ["a2", "a3", "b1"]
    assert any(n.event == "rotation" and "rotated" in n.text for n in f.notes)
    append(log, "b2\n")
    assert drain(f) == ["b2"]


def test_copytruncate_is_bridged_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("a1\n")
    f = LogFollower(log, start_at="beginning")
    assert drain(f) == ["a1"]
    append(log, "a2\na3\n")  # written, not yet read, when logrotate copies and truncates
    shutil.copy(log, tmp_path / "mail.log.1")
    os.truncate(log, 0)
    append(log, "b1\n")
    assert drain(f) == ["a2", "a3", "b1"]
    assert any(n.event == "truncation" and "truncated" in n.text for n in f.notes)


def test_truncation_that_regrew_past_our_offset_is_noticed(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("short\n")
    f = LogFollower(log, start_at="beginning")
    assert drain(f) == ["short"]
    os.truncate(log, 0)
    append(log, "a much longer line than before\n")
    assert drain(f) == ["a much longer line than before"]


def test_restart_resumes_exactly_where_it_stopped(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("1\n2\n")
    f = LogFollower(log, start_at="beginning")
    assert drain(f) == ["1", "2"]
    saved = Position.decode(f.position.encode())
    f.close()
    append(log, "3\n")
    g = LogFollower(log, saved)
    assert drain(g) == ["3"]


def test_restart_after_a_rotation_while_down_reads_the_rest_of_the_old_file(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("1\n")
    f = LogFollower(log, start_at="beginning")
    assert drain(f) == ["1"]
    saved = f.position
    f.close()
    append(log, "2\n")
    log.rename(tmp_path / "mail.log.1")
    log.write_text("3\n")
    g = LogFollower(log, saved)
    assert drain(g) == ["2", "3"]


def test_restart_after_a_copytruncate_while_down(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("1\n")
    f = LogFollower(log, start_at="beginning")
    assert drain(f) == ["1"]
    saved = f.position
    f.close()
    append(log, "2\n")
    shutil.copy(log, tmp_path / "mail.log.1")
    os.truncate(log, 0)
    append(log, "3\n")
    g = LogFollower(log, saved)
    assert drain(g) == ["2", "3"]


def test_an_endless_line_is_cut_instead_of_buffered_forever(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"x" * 200_000)
    f = LogFollower(log, start_at="beginning")
    lines = drain(f)
    assert lines and all(len(line) <= 64 * 1024 for line in lines)


def test_a_missing_file_is_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    f = LogFollower(log, start_at="beginning")
    assert drain(f) == []
    assert [n.event for n in f.notes] == ["waiting"]  # not counted as lost lines
    log.write_text("hello\n")
    assert drain(f) == ["hello"]


def test_position_decode_rejects_junk() -> None:
    import pytest

    with pytest.raises(ValueError):
        Position.decode("banana")


def test_a_crash_while_the_copy_of_a_copytruncate_is_read_resumes_the_copy(tmp_path: Path) -> None:
    """CI under load killed the daemon while it read the rest of a copytruncate copy:
    the saved position named only the truncated file (at 0), and the copy's unread
    lines were never counted. The position names the copy too now."""
    log = tmp_path / "mail.log"
    log.write_text("")
    f = LogFollower(log, start_at="beginning")
    append(log, "a1\n")
    assert drain(f) == ["a1"]
    append(log, "".join(f"b{i}\n" for i in range(10)))  # written, not yet read
    shutil.copy(log, tmp_path / "mail.log.2")
    os.truncate(log, 0)
    append(log, "c1\n")
    assert f.read_lines(4) == ["b0", "b1", "b2", "b3"]  # then the process dies
    saved = Position.decode(f.position.encode())
    assert saved.old_inode == (tmp_path / "mail.log.2").stat().st_ino
    f.close()
    again = LogFollower(log, saved, start_at="beginning")
    assert drain(again) == [f"b{i}" for i in range(4, 10)] + ["c1"]


def test_a_second_crash_while_a_renamed_file_is_read_resumes_it(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = LogFollower(log, start_at="beginning")
    append(log, "a0\na1\n")
    assert drain(f) == ["a0", "a1"]
    first = f.position
    f.close()  # down while the log rotates (rename) and the old file still grows
    log.rename(tmp_path / "mail.log.1")
    append(tmp_path / "mail.log.1", "".join(f"a{i}\n" for i in range(2, 8)))
    append(log, "n1\n")
    again = LogFollower(log, first, start_at="beginning")
    assert again.read_lines(2) == ["a2", "a3"]  # then down again
    saved = Position.decode(again.position.encode())
    assert saved.old_inode == (tmp_path / "mail.log.1").stat().st_ino
    again.close()
    third = LogFollower(log, saved, start_at="beginning")
    assert drain(third) == ["a4", "a5", "a6", "a7", "n1"]


def test_position_encodings_round_trip_and_older_ones_still_read() -> None:
    both = Position(12, 340, b"x\n", 56, 78, b"y\n")
    assert Position.decode(both.encode()) == both
    assert Position.decode("12 340 780a") == Position(12, 340, b"x\n")
    assert Position.decode("12 340") == Position(12, 340)


def test_a_copytruncate_of_the_new_file_while_the_renamed_one_is_read(tmp_path: Path) -> None:
    """CI under load: the daemon was still reading the renamed file when the new one,
    of which it had read nothing, was copytruncated. With offset 0 and no tail there
    was nothing to compare, and the new file's first lines were lost. The follower now
    watches the waiting file's size and first bytes, and reads its copy in turn."""
    log = tmp_path / "mail.log"
    log.write_text("")
    f = LogFollower(log, start_at="beginning")
    append(log, "".join(f"a{i}\n" for i in range(6)))
    assert f.read_lines(1) == ["a0"]
    log.rename(tmp_path / "mail.log.1")
    append(log, "b0\nb1\n")
    assert f.read_lines(2) == ["a1", "a2"]  # the rotation is seen; the old file is not done
    append(log, "b2\n")
    assert f.read_lines(1) == ["a3"]  # the new file has grown, still unread
    shutil.copy(log, tmp_path / "mail.log.2")  # copytruncate of the new file
    os.truncate(log, 0)
    append(log, "c0\n")
    assert drain(f) == ["a4", "a5", "b0", "b1", "b2", "c0"]
    assert any("truncated before we read it; read it from mail.log.2" in n.text for n in f.notes)
    append(log, "c1\n")
    assert drain(f) == ["c1"]


def test_a_new_file_that_only_grows_while_the_renamed_one_is_read_is_no_truncation(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    f = LogFollower(log, start_at="beginning")
    append(log, "".join(f"a{i}\n" for i in range(4)))
    assert f.read_lines(1) == ["a0"]
    log.rename(tmp_path / "mail.log.1")
    shutil.copy(tmp_path / "mail.log.1", tmp_path / "mail.log.2")  # a sibling that must not be taken
    for i in range(3):
        append(log, f"b{i}\n")
        assert len(f.read_lines(1)) == 1
    assert drain(f) == ["b0", "b1", "b2"]
    assert not any(n.event == "truncation" for n in f.notes)


def test_a_copytruncate_after_a_finished_rename_is_bridged_once(tmp_path: Path) -> None:
    """The watch of a waiting file starts afresh at each attach: what it saw of the file
    before a rename must not make a later copytruncate look like a second one."""
    log = tmp_path / "mail.log"
    log.write_text("")
    f = LogFollower(log, start_at="beginning")
    append(log, "a0\n")
    assert drain(f) == ["a0"]
    log.rename(tmp_path / "mail.log.1")
    append(log, "b0\nb1\n")
    assert drain(f) == ["b0", "b1"]  # the renamed file finished, the new one read
    append(log, "b2\nb3\n")
    shutil.copy(log, tmp_path / "mail.log.2")  # copytruncate, b2 and b3 not read yet
    os.truncate(log, 0)
    append(log, "c0\n")
    assert f.read_lines(1) == ["b2"]  # the copy is being read: the new file waits
    assert f.read_lines(1) == ["b3"]
    assert drain(f) == ["c0"]
    assert not any("before we read it" in n.text for n in f.notes), f.notes
