"""The asyncio server in-process, with a real redis-server behind the engine."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import stat
from collections.abc import Awaitable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from policyd.server import PolicyServer
from smtp_balancer.engine import Engine
from tests.ready import started

ENDPOINTS = ("out1", "out2", "out3")
EOM = (
    b"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nsender=a@shop.test\n"
    b"recipient=b@example.test\ninstance=%d\n\n"
)


async def start(make_config, tmp_path: Path, **policyd) -> tuple[PolicyServer, Engine]:
    sock = tmp_path / "policy.sock"
    config = make_config(
        {"policyd": {"listen": ["inet:127.0.0.1:0", f"unix:{sock}"], "metrics_listen": "", **policyd}}
    )
    engine = Engine(config)
    server = PolicyServer(engine, config.policyd)
    await server.start()
    return server, engine


def tcp_port(server: PolicyServer) -> int:
    return next(int(a.rsplit(":", 1)[1]) for a in server.addresses if a.startswith("inet:"))


async def exim_readsocket(server: PolicyServer, queue_id: str, sent_at: float) -> bytes:
    """One request as Exim's ${readsocket} sends it (``sent_at``: epoch seconds), its
    side shut after sending; the whole answer, up to the server's close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
    writer.write(
        f"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nqueue_id={queue_id}\n"
        "sender=a@shop.test\nrecipients=b@gmail.com\nrecipient_count=1\n"
        f"sent_at={int(sent_at * 1e6)}\n\n".encode()
    )
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def counted_today(rdb, today) -> int:
    """Warm-up units counted on ``today`` over every endpoint."""
    return sum(int(rdb.hget(f"{{sb}}:count:{ep}:day:{today:%Y%m%d}", "total") or 0) for ep in ENDPOINTS)


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, i: int) -> bytes:
    writer.write(EOM % i)
    await writer.drain()
    return await reader.readuntil(b"\n\n")


async def test_500_persistent_connections_at_once(make_config, tmp_path: Path):
    server, engine = await start(make_config, tmp_path)
    conns = []
    try:
        for _ in range(500):
            conns.append(await asyncio.open_connection("127.0.0.1", tcp_port(server)))
        replies = await asyncio.gather(*(ask(r, w, i) for i, (r, w) in enumerate(conns)))
        assert all(rep.startswith(b"action=FILTER out") for rep in replies)
        assert server.connections == 500
        # the same connections serve a second round: they are persistent
        again = await asyncio.gather(*(ask(r, w, i) for i, (r, w) in enumerate(conns)))
        assert len(again) == 500
    finally:
        for _, w in conns:
            w.close()
        await server.close()
        await engine.aclose()


RCPT = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@shop.test\n"
    b"recipient=b@example.test\ninstance=%d\n\n"
)


async def test_replies_a_client_does_not_read_yet_wait_in_order_behind_a_full_socket(
    make_config, tmp_path: Path
):
    """Replies go straight to the socket (PolicyConnection._write) while asyncio buffers
    nothing. A client that sends and does not read fills the socket: the rest wait in
    asyncio's buffer, in order, and once it is empty replies go straight again."""
    server, engine = await start(make_config, tmp_path)
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "policy.sock"))
        assert (await ask(reader, writer, 0)).startswith(b"action=FILTER out")
        (conn,) = server.open_connections
        # the server's side takes a few KB unread (the kernel's least)
        conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        n = 1500
        writer.write(b"".join(RCPT % i + EOM % i for i in range(1, n)))
        await writer.drain()
        deadline = loop.time() + 30
        while not conn.backlog:  # the socket took what it could: asyncio holds the rest
            assert loop.time() < deadline, "the socket never filled"
            await asyncio.sleep(0.01)
        replies = [await asyncio.wait_for(reader.readuntil(b"\n\n"), 30) for _ in range(2 * (n - 1))]
        assert replies[0::2] == [b"action=DUNNO\n\n"] * (n - 1)
        assert all(re.fullmatch(rb"action=FILTER out[123]:\n\n", r) for r in replies[1::2])
        assert (await ask(reader, writer, n)).startswith(b"action=FILTER out")
        assert not conn.backlog  # asyncio's buffer is empty: straight to the socket again
        writer.close()
    finally:
        await server.close()
        await engine.aclose()


async def test_unix_socket_mode_and_idle_timeout(make_config, tmp_path: Path):
    server, engine = await start(make_config, tmp_path, unix_mode="0660", idle_timeout_s=1)
    try:
        sock = tmp_path / "policy.sock"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        reader, writer = await asyncio.open_unix_connection(str(sock))
        assert (await ask(reader, writer, 1)).startswith(b"action=FILTER out")
        # idle: the server closes after idle_timeout_s
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await server.close()
        await engine.aclose()


async def test_max_connections_refuses_extra(make_config, tmp_path: Path):
    server, engine = await start(make_config, tmp_path, max_connections=2)
    try:
        held = [await asyncio.open_connection("127.0.0.1", tcp_port(server)) for _ in range(2)]
        for r, w in held:
            await ask(r, w, 0)
        r3, w3 = await asyncio.open_connection("127.0.0.1", tcp_port(server))
        assert await asyncio.wait_for(r3.read(), 5) == b""
        for _, w in [*held, (r3, w3)]:
            w.close()
    finally:
        await server.close()
        await engine.aclose()


async def test_half_request_then_silence_is_cut_off_as_truncated(make_config, tmp_path: Path):
    from policyd import metrics

    server, engine = await start(make_config, tmp_path, idle_timeout_s=1)
    before = metrics.PROTOCOL_ERRORS.labels("truncated")._value.get()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
        writer.write(b"request=smtpd_access_policy\nprotocol_state=END")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert metrics.PROTOCOL_ERRORS.labels("truncated")._value.get() == before + 1
        writer.close()
    finally:
        await server.close()
        await engine.aclose()


async def test_an_abuse_run_logs_a_few_lines_per_kind_and_counts_all(make_config, tmp_path: Path, caplog):
    import logging

    from policyd import metrics

    caplog.set_level(logging.INFO, logger="smtp_balancer.policyd")
    server, engine = await start(make_config, tmp_path)
    malformed = metrics.PROTOCOL_ERRORS.labels("malformed")
    not_utf8 = metrics.PROTOCOL_ERRORS.labels("not_utf8")
    before = (malformed._value.get(), not_utf8._value.get())
    try:
        for i in range(224):  # as many bad connections as the abuse run in the issue
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
            writer.write(b"no equals sign here\n\n" if i % 2 else b"name=\xff\xfe\n\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed on us
            writer.close()
        assert (malformed._value.get(), not_utf8._value.get()) == (before[0] + 112, before[1] + 112)
        lines = [r for r in caplog.records if r.getMessage().startswith("closing policy connection")]
        assert len(lines) == 2 * server.notes.burst  # the first few of each kind, not 224
    finally:
        await server.close()
        await engine.aclose()
    summaries = [r.getMessage() for r in caplog.records if "left out of the log" in r.getMessage()]
    assert sorted(s.split(" line(s)")[0] for s in summaries) == [
        "107 more protocol error (malformed)",
        "107 more protocol error (not_utf8)",
    ]


def decisions_made() -> float:
    from smtp_balancer.observe import metrics as decision_metrics

    samples = (s for m in decision_metrics.DECISIONS.collect() for s in m.samples)
    return sum(s.value for s in samples if s.name.endswith("_total"))


async def test_a_postfix_request_whose_client_already_left_is_not_decided(make_config, tmp_path: Path):
    from policyd import metrics

    server, engine = await start(make_config, tmp_path)
    abandoned = metrics.ABANDONED.labels("postfix")
    before = abandoned._value.get()
    decided = decisions_made()
    try:
        await started(engine)
        # as a frozen daemon finds it: the request, then the client's close, both waiting
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
        writer.write(EOM % 1)
        writer.write_eof()
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) in (b"action=DUNNO\n\n", b"")
        writer.close()
        assert abandoned._value.get() == before + 1
        # a client that waits is decided as usual
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
        assert (await ask(reader, writer, 2)).startswith(b"action=FILTER ")
        writer.close()
        after = decisions_made()
        assert after == decided + 1  # only the second request was decided
    finally:
        await server.close()
        await engine.aclose()


async def test_a_request_older_than_postfix_timeout_is_not_decided(make_config, tmp_path: Path):
    import time

    from policyd import metrics

    server, engine = await start(make_config, tmp_path, postfix_timeout_s=1)
    abandoned = metrics.ABANDONED.labels("postfix")
    before, decided = abandoned._value.get(), decisions_made()
    try:
        await started(engine)
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
        writer.write(EOM % 1)
        await writer.drain()
        time.sleep(1.2)  # the daemon "frozen": its loop cannot read for longer than Postfix waits
        await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
        assert abandoned._value.get() == before + 1 and decisions_made() == decided
        assert (await ask(reader, writer, 2)).startswith(b"action=FILTER ")  # a fresh one is decided
        assert decisions_made() == decided + 1
        writer.close()
    finally:
        await server.close()
        await engine.aclose()


def test_a_loop_that_keeps_up_decides_without_asking_the_kernel(make_config, tmp_path: Path, monkeypatch):
    """In the daemon's own loop (policyd/loop.py) a request read while the loop keeps
    up is decided with no TCP_INFO or peek; one read after a stall is checked as before."""
    import socket
    import time

    from policyd import session
    from policyd.loop import PolicyLoop
    from policyd.transport import PolicyConnection

    asked: list[str] = []

    class Asking(PolicyConnection):  # the daemon's connection, counting its kernel asks
        def waited_s(self) -> float | None:
            asked.append("waited")
            return 0.0

        def gone(self) -> bool:
            asked.append("gone")
            return False

    async def body() -> None:
        server, engine = await start(make_config, tmp_path, postfix_timeout_s=30)
        loop = asyncio.get_running_loop()
        try:
            await started(engine)
            # a TCP connection the server's way (accepted on loopback), made our subclass
            with socket.create_server(("127.0.0.1", 0)) as listener:
                theirs = socket.create_connection(listener.getsockname())
                ours, _ = listener.accept()
            await loop.connect_accepted_socket(lambda: Asking(server), ours)
            reader, writer = await asyncio.open_connection(sock=theirs)
            await ask(reader, writer, 0)  # a new connection's first request may be checked
            # a bound far above any scheduling delay on a busy machine: never flaky
            monkeypatch.setattr(session, "RECENT_S", 10.0)
            asked.clear()
            for i in range(1, 21):
                assert (await ask(reader, writer, i)).startswith(b"action=FILTER ")
            assert asked == []
            monkeypatch.setattr(session, "RECENT_S", 0.3)
            writer.write(EOM % 21)
            await writer.drain()
            time.sleep(0.6)  # the loop stalls with the request waiting: its age is not known
            assert (await reader.readuntil(b"\n\n")).startswith(b"action=FILTER ")
            assert asked == ["waited", "gone"]
            writer.close()
        finally:
            await server.close()
            await engine.aclose()

    with asyncio.Runner(loop_factory=PolicyLoop) as runner:
        runner.run(body())


async def test_open_instances_gauge_counts_messages_waiting_for_end_of_message(make_config, tmp_path: Path):
    server, engine = await start(make_config, tmp_path)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
        for i in (1, 2):
            writer.write(
                b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@shop.test\n"
                b"recipient=b@example.test\ninstance=open.%d\n\n" % i
            )
            await writer.drain()
            assert await reader.readuntil(b"\n\n") == b"action=DUNNO\n\n"
        assert REGISTRY.get_sample_value("smtp_balancer_policy_open_instances") == 2
        writer.close()
    finally:
        await server.close()
        await engine.aclose()


def rcpt(instance: str, recipient: str) -> bytes:
    return (
        b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a@shop.test\n"
        b"recipient=%s\ninstance=%s\n\n" % (recipient.encode(), instance.encode())
    )


def eom(instance: str, count: int) -> bytes:
    return (
        b"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nsender=a@shop.test\n"
        b"recipient=\nrecipient_count=%d\ninstance=%s\n\n" % (count, instance.encode())
    )


async def exchange(server: PolicyServer, requests: list[bytes]) -> list[bytes]:
    """One connection (as Postfix reconnects): each request and its reply in turn."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
    try:
        replies = []
        for request in requests:
            writer.write(request)
            await writer.drain()
            replies.append(await reader.readuntil(b"\n\n"))
        return replies
    finally:
        writer.close()


def unknown() -> float:
    return REGISTRY.get_sample_value("smtp_balancer_policy_recipients_unknown_total") or 0.0


async def test_workers_share_a_messages_recipients_across_processes(make_config, tmp_path: Path, rdb):
    """Two workers on one Redis: a message's RCPT requests reach one, its END-OF-MESSAGE
    the other (Postfix reconnected). The second decides with every recipient; with
    workers: 1 the same exchange leaves two recipients unknown."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, engine_a = await start(make_config, tmp_path / "a")
    second, engine_b = await start(make_config, tmp_path / "b")
    recipients = ["u1@gmail.com", "u2@yahoo.com", "u3@gmail.com"]
    try:
        for workers, instance in ((2, "shared.1"), (1, "alone.1")):
            first.workers = second.workers = workers
            before = unknown()
            assert await exchange(first, [rcpt(instance, r) for r in recipients]) == [b"action=DUNNO\n\n"] * 3
            (action,) = await exchange(second, [eom(instance, len(recipients))])
            assert action.startswith(b"action=FILTER out")
            assert unknown() - before == (0 if workers == 2 else 1)
        assert rdb.keys("{sb}:join:*") == []  # read once, then dropped
    finally:
        for server, engine in ((first, engine_a), (second, engine_b)):
            await server.close()
            await engine.aclose()


async def test_an_answer_cancelled_as_the_daemon_stops_is_no_error(make_config, tmp_path: Path, caplog):
    """Stopping cancels the tasks still settling answers: the task ends cancelled, the
    connection is no longer busy, and nothing is logged at error level (asyncio would
    say "Task exception was never retrieved")."""
    from policyd.session import Incomplete
    from policyd.transport import PolicyConnection

    server, engine = await start(make_config, tmp_path)
    try:
        await started(engine)
        connection = PolicyConnection(server)
        connection.busy = True
        for _ in range(server.config.max_concurrent_decisions):  # every slot held here
            await server.decisions.acquire()
        request = {"protocol_state": "END-OF-MESSAGE", "sender": "a@shop.test", "instance": "i.1"}
        task = asyncio.create_task(connection._settle(Incomplete(request, ["b@gmail.com"])))
        await asyncio.sleep(0)  # the task has begun: it reads the shared join, then waits
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled() and not connection.busy
        assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        await server.close()
        await engine.aclose()


async def test_exims_answer_and_end_of_file_leave_in_the_step_that_decides(make_config, tmp_path: Path):
    """Exim's ${readsocket} takes the answer only at end-of-file. The connection is shut
    in the data_received call that answers, before the loop turns again: a daemon
    stopped in the next turn cannot leave Exim waiting with the answer in hand. A
    Postfix connection stays open for its next request."""
    import socket
    import time

    from policyd.transport import PolicyConnection

    server, engine = await start(make_config, tmp_path)
    loop = asyncio.get_running_loop()
    try:
        await started(engine)
        for exim in (True, False):
            ours, theirs = socket.socketpair()
            connection = PolicyConnection(server)
            await loop.connect_accepted_socket(lambda c=connection: c, ours)
            request = (
                "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nqueue_id=1A2B3C-000001-AB\n"
                "sender=a@shop.test\nrecipient=b@gmail.com\nrecipient_count=1\n"
            )
            if exim:
                request += f"recipients=b@gmail.com\nsent_at={int(time.time() * 1e6)}\n"
            connection.data_received((request + "\n").encode())  # no await: no loop turn
            theirs.setblocking(False)
            answer = theirs.recv(4096)
            assert answer.startswith(b"action=FILTER out") and answer.endswith(b"\n\n")
            if exim:
                assert theirs.recv(4096) == b""  # end-of-file, already
            else:
                with pytest.raises(BlockingIOError):  # open, and nothing more to read
                    theirs.recv(4096)
            theirs.close()
    finally:
        await server.close()
        await engine.aclose()


async def test_an_exim_route_decided_after_exim_gave_up_is_given_back(make_config, tmp_path: Path, rdb):
    """An Exim request fresh when read, whose decision then waits past Exim's readsocket
    timeout (behind max_concurrent_decisions, as after a freeze): Exim has accepted the
    message without a route by then, so the route is not answered and what it counted
    goes back."""
    import time

    from policyd import metrics
    from smtp_balancer.clock import utc_now

    today = utc_now().date()  # the engine's clock (the suite pins it)
    config = make_config(
        {
            "decision": {"local": False, "budget_ms": 300},  # fresh requests are decided
            "policyd": {"listen": ["inet:127.0.0.1:0"], "metrics_listen": "", "max_concurrent_decisions": 1},
            # every endpoint counted: each warming, with room to spare
            "endpoints": {
                ep: {"warmup": {"start": today.isoformat(), "schedule": [100_000]}} for ep in ENDPOINTS
            },
        }
    )
    engine = Engine(config)
    server = PolicyServer(engine, config.policyd, exim_timeout_s=1.0)
    await server.start()
    abandoned = metrics.ABANDONED.labels("exim")
    before = abandoned._value.get()

    def readsocket(queue_id: str) -> Awaitable[bytes]:
        return exim_readsocket(server, queue_id, time.time())

    def counted() -> int:
        return counted_today(rdb, today)

    try:
        await started(engine)
        await server.decisions.acquire()  # another decision holds the only slot
        late = asyncio.create_task(readsocket("1A2B3C-000001-AB"))
        await asyncio.sleep(0.9)  # past Exim's timeout less the answer's margin (0.2 s)
        server.decisions.release()
        assert await late == b"action=DUNNO\n\n"
        assert abandoned._value.get() == before + 1
        assert (await readsocket("1A2B3C-000002-AB")).startswith(b"action=FILTER ")
        # the give-back goes out with a lease round (the service's own, or this one)
        for _ in range(500):
            if counted() == 1:
                break
            await engine.leases.round()
            await asyncio.sleep(0.01)
        assert counted() == 1  # the second message only
    finally:
        await server.close()
        await engine.aclose()


async def test_a_daemon_stopped_between_its_check_and_its_decision_gives_the_route_back(
    make_config, tmp_path: Path, rdb, caplog
):
    """A hog-loop run counted a unit for an Exim message that had left by the default
    interface: SIGSTOP landed after the request's age was checked and before the local
    decision, which the daemon made 15 s later on resuming. A decision made well after
    the check asks again, and gives back what it counted."""
    import time

    from smtp_balancer.clock import Clock, utc_now
    from smtp_balancer.generation import ATTRIBUTE, MARKER

    today = utc_now().date()  # the engine's clock (the suite pins it)
    config = make_config({"policyd": {"listen": ["inet:127.0.0.1:0"], "metrics_listen": ""}})

    class Stoppable(Clock):
        """The server's clock: armed, the process stops for 3 s right after the next
        monotonic reading, which is the one the server takes when its check passes."""

        stopped_s = 0.0
        armed = False

        def wall(self) -> float:
            return time.time() + self.stopped_s

        def monotonic(self) -> float:
            now = time.monotonic() + self.stopped_s
            if self.armed:
                self.armed = False
                self.stopped_s += 3.0
            return now

    clock = Stoppable()
    engine = Engine(config)
    server = PolicyServer(engine, config.policyd, exim_timeout_s=2.0, host_clock=clock)

    def counted() -> int:
        return counted_today(rdb, today)

    try:
        await server.start()
        await started(engine)
        await engine.settle()
        assert (await exim_readsocket(server, "1A2B3C-000001-AB", clock.wall())).startswith(b"action=FILTER ")
        request = {
            "request": "smtpd_access_policy",
            "protocol_state": "END-OF-MESSAGE",
            "queue_id": "1A2B3C-000002-AB",
            "sender": "a@shop.test",
            "recipients": "b@gmail.com",
            "recipient_count": "1",
            "sent_at": str(int(clock.wall() * 1e6)),
            ATTRIBUTE: MARKER,
        }
        clock.armed = True
        with caplog.at_level("WARNING", logger="smtp_balancer.policyd"):
            # a string: decided locally, at once (a draw for Redis would be a Drawn)
            assert server.answer_now(request) == "DUNNO"
            server.notes.flush()
        assert not clock.armed  # the check passed, and then the process stopped
        assert any(
            "not routing queue id 1A2B3C-000002-AB, decided too late" in r.getMessage()
            for r in caplog.records
        )
        for _ in range(500):  # the give-back goes out with a lease round
            await engine.leases.round()
            if counted() == 1:
                break
            await asyncio.sleep(0.01)
        assert counted() == 1  # the first message only
    finally:
        await server.close()
        await engine.aclose()


async def test_requests_from_files_an_older_release_rendered_are_counted_and_said(
    make_config, tmp_path: Path, caplog
):
    """Postfix sends the rendered policy_context with every request, Exim its request
    attribute: without it (or with an older one) the request is answered as usual, and
    counted and logged with what to do (README: Upgrading)."""
    from policyd import metrics
    from smtp_balancer.generation import GENERATION, MARKER

    server, engine = await start(make_config, tmp_path)
    stale = metrics.STALE_CONFIG

    def counted(mta: str) -> float:
        return stale.labels(mta, "1")._value.get()

    before = {mta: counted(mta) for mta in ("postfix", "exim")}
    newer = stale.labels("postfix", str(GENERATION + 1))._value.get()
    marked = f"policy_context={MARKER}\n".encode()
    exim = b"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nrecipients=b@gmail.com\n"
    try:
        await started(engine)
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
        for request in (
            rcpt("i1", "b@gmail.com"),  # no marker: stale
            rcpt("i1", "c@gmail.com").replace(b"\n\n", b"\n" + marked + b"\n"),
            rcpt("i1", "d@gmail.com").replace(
                b"\n\n", f"\npolicy_context=smtp-balancer/{GENERATION + 1}\n\n".encode()
            ),
        ):
            writer.write(request)
            await writer.drain()
            assert (await reader.readuntil(b"\n\n")).startswith(b"action=")  # answered as usual
        writer.close()
        for request in (exim + b"policy_context=smtp-balancer/1\n\n", exim + marked + b"\n"):
            # as ${readsocket}: one request a connection, its answer read to end-of-file
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(server))
            writer.write(request)
            assert (await reader.read()).startswith(b"action=")  # answered as usual
            writer.close()
        assert counted("postfix") == before["postfix"] + 1
        assert counted("exim") == before["exim"] + 1
        assert stale.labels("postfix", str(GENERATION + 1))._value.get() == newer  # not older
        said = [r.getMessage() for r in caplog.records if "rendered by an older release" in r.getMessage()]
        assert any("Postfix files" in m and "smtp-balancer render postfix" in m for m in said), said
        assert any("Exim files" in m and "smtp-balancer render exim" in m for m in said), said
    finally:
        await server.close()
        await engine.aclose()


async def test_a_held_tenants_rcpt_is_answered_hold_once_the_hold_is_read(make_config, rdb, tmp_path):
    config = make_config({"tenants": ["shop.test"], "policyd": {"metrics_listen": ""}})
    engine = Engine(config)
    server = PolicyServer(engine, config.policyd, tenants=config.tenants)
    await started(engine)
    rcpt = {"request": "smtpd_access_policy", "protocol_state": "RCPT", "recipient": "b@example.test"}
    try:
        assert server.answer_now({**rcpt, "sender": "a@mail.shop.test"}) == "DUNNO"
        rdb.set("{sb}:tenanthold:shop.test", "complaints at 1%", ex=60)
        server.holds.every_s = 0.01
        watch = asyncio.get_running_loop().create_task(server.watch_holds())
        while not server.holds.held:  # an event: the hold read
            await asyncio.sleep(0.01)
        assert (
            server.answer_now({**rcpt, "sender": "a@mail.shop.test"})
            == "HOLD tenant shop.test is held by smtp-balancer"
        )
        assert server.answer_now({**rcpt, "sender": "x@other.test"}) == "DUNNO"
        assert server.answer_now({**rcpt, "protocol_state": "DATA", "sender": "a@shop.test"}) == "DUNNO"
        # Exim asks once, at DATA: its answer keeps the route and says HOLD-TENANT after it
        exim = {"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE", "recipient_count": "1"}
        held = server.answer_now({**exim, "sender": "a@shop.test", "recipients": "b@example.test"})
        assert re.fullmatch(r"FILTER out\d: HOLD-TENANT shop\.test", str(held)), held
        free = server.answer_now({**exim, "sender": "a@other.test", "recipients": "b@example.test"})
        assert re.fullmatch(r"FILTER out\d:", str(free)), free
        # Postfix's END-OF-MESSAGE: the route only (its RCPT said HOLD)
        postfix = server.answer_now({**exim, "sender": "a@shop.test", "recipient": "b@example.test"})
        assert re.fullmatch(r"FILTER out\d:", str(postfix)), postfix
        rdb.delete("{sb}:tenanthold:shop.test")
        while server.holds.held:  # released: read again
            await asyncio.sleep(0.01)
        assert server.answer_now({**rcpt, "sender": "a@shop.test"}) == "DUNNO"
        watch.cancel()
    finally:
        await engine.aclose()
    assert REGISTRY.get_sample_value("smtp_balancer_policy_tenant_held_total", {"tenant": "shop.test"}) >= 1
