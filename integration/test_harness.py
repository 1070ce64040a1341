"""The harness itself: a private Postfix whose chosen port was taken meanwhile still starts."""

from __future__ import annotations

import io
import shutil
import socket
from email.generator import BytesGenerator
from pathlib import Path

import pytest

from integration.daemons import process_gone
from integration.postfix import PostfixInstance, make_shared_dir
from integration.sink import Sink, free_port
from integration.submit import build_message, message_bytes
from integration.waits import wait_until


def test_postfix_moves_to_a_new_port_when_its_port_was_taken():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    sink = Sink()
    sink.start()
    base = make_shared_dir("sb-harness-")
    postfix = PostfixInstance(base, smtpd_port=port, sink_port=sink.port)
    try:
        postfix.start()
        assert postfix.smtpd_port != port
        with socket.create_connection(("127.0.0.1", postfix.smtpd_port), timeout=10) as smtp:
            assert smtp.recv(100).startswith(b"220 ")
    finally:
        postfix.stop()
        sink.stop()
        taken.close()
        shutil.rmtree(base, ignore_errors=True)


def test_free_port_never_hands_out_a_port_twice() -> None:
    """Two daemons of one test once got the same metrics port (bind(0) reuses a port
    once its socket is closed): the second could not listen and never started."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_xdist_workers_draw_ports_from_blocks_of_their_own(monkeypatch) -> None:
    """Two workers once drew one port from the kernel's shared range before either
    daemon bound it: each worker has a block now, below the ephemeral range."""
    from integration import sink

    blocks = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
        blocks.append(set(sink._port_block()))
    assert not blocks[0] & blocks[1] and min(len(b) for b in blocks) >= 2000
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(port < low for block in blocks for port in block)  # bind(0) never hands them out


def test_a_master_that_does_not_stop_is_killed_with_its_children():
    """A Postfix whose postlogd died blocks every process that logs, the master and
    `postfix stop` too: stop() kills the master by PID, and its children with it, which
    would otherwise outlive it stuck on the dead logger's socket."""
    import os
    import signal

    children: set[int] = set()
    sink = Sink()
    sink.start()
    base = make_shared_dir("sb-harness-")
    postfix = PostfixInstance(base, smtpd_port=free_port(), sink_port=sink.port)
    try:
        postfix.start()
        master = postfix._master_pid
        assert master is not None
        children = postfix.children()
        assert children  # qmgr and pickup at least
        for pid in (master, *children):  # stuck: no signal but SIGKILL moves them now
            os.kill(pid, signal.SIGSTOP)
        postfix.stop()
        # SIGKILL is delivered, not waited for: each is gone (or a zombie) soon after
        wait_until(
            lambda: all(process_gone(pid) for pid in (master, *children)),
            30,  # a bound on a hang: the wait ends when they are gone
            f"master {master} and its children {children} gone",
        )
    finally:
        postfix.stop()
        for pid in children:  # if stop() left them, the test does not
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
        sink.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize(
    ("recipients", "tag", "headers"),
    [
        (["u5@gmail.com"], "", None),
        (
            ["u5@gmail.com", "x@y.test"],
            "a",
            {"Precedence": "bulk", "List-Unsubscribe": "<mailto:u@shop.test>"},
        ),
        ([f"user{i}@example{i}.test" for i in range(12)], "t", None),  # a To: the email package folds
        (["x@y.test"], "", {"X-Note": "h\u00e9llo"}),  # not ASCII: the email package encodes it
    ],
    ids=["plain", "headers", "folded", "non-ascii"],
)
def test_message_bytes_are_what_the_email_package_sends(recipients, tag, headers) -> None:
    """send_many writes short ASCII messages out itself: the bytes must be what
    smtplib's send_message would have sent for build_message."""
    with io.BytesIO() as sent:
        BytesGenerator(sent).flatten(
            build_message(7, "s@shop.test", recipients, tag, headers), linesep="\r\n"
        )
        assert message_bytes(7, "s@shop.test", recipients, tag, headers) == sent.getvalue()
