"""The harness itself: a private Postfix whose chosen port was taken meanwhile still starts."""

from __future__ import annotations

import shutil
import socket

from integration.postfix import PostfixInstance, make_shared_dir
from integration.sink import Sink


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
    from integration.sink import free_port

    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
