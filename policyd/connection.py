"""One client connection's protocol state, sans I/O (as h11 keeps ``Connection``
apart from sockets).

Bytes go in (``receive_data``, ``receive_eof``) and replies come out, strictly in
request order. A request the engine cannot settle at once leaves the connection
``waiting`` on its Pending draw; later requests queue behind it until
``answered`` is called with its action. The asyncio Protocol in ``transport.py``
is a thin shim that moves bytes and runs the one wait as a task.

A connection is ``finished`` once the client has shut its side, or once Exim's one
request is answered: ${readsocket} takes the answer only at end-of-file, so the
shim shuts the connection in the step that writes it.
"""

from __future__ import annotations

from collections.abc import Callable

from policyd.protocol import PolicyRequest, ProtocolError, RequestParser, format_reply
from policyd.session import Later, from_readsocket

Answer = Callable[[PolicyRequest], "str | Later"]


class ConnectionState:
    def __init__(self, answer: Answer, parser: RequestParser | None = None) -> None:
        self.answer = answer
        self.parser = parser or RequestParser()
        # requests read and not yet answered, the next last (pop() and a list's own
        # operations are native when compiled; a deque's are method calls)
        self.queue: list[PolicyRequest] = []
        self.waiting: Later | None = None  # the request being answered by a task
        self.eof = False
        self.last = False  # the client's last request was taken (Exim sends one)

    def receive_data(self, data: bytes) -> list[bytes]:
        """Replies that are ready now; raises ProtocolError (the connection must close)."""
        try:
            requests = self.parser.feed(data)
        except ProtocolError:
            self.queue.clear()  # nothing more is answered on a broken stream
            raise
        if requests:
            if self.queue or len(requests) > 1:
                requests.reverse()
                requests.extend(self.queue)  # those read before stay last: answered first
            self.queue = requests
        return self._run()

    def receive_eof(self) -> list[bytes]:
        """The client shut its side (Exim's ${readsocket}): still answer what it sent."""
        self.eof = True
        try:
            self.parser.eof()
        except ProtocolError:
            self.queue.clear()
            raise
        return self._run()

    def answered(self, action: str) -> list[bytes]:
        """The waiting request's action, and the replies it unblocked."""
        self.waiting = None
        return [format_reply(action), *self._run()]

    @property
    def finished(self) -> bool:
        """Every request is answered and no other will come (the client shut its
        side, or Exim's one request was taken): close."""
        return (self.eof or self.last) and self.waiting is None and not self.queue

    @property
    def mid_request(self) -> bool:
        """Bytes of an unfinished request are buffered (an idle timeout is a truncation)."""
        return self.parser.pending

    def _run(self) -> list[bytes]:
        out: list[bytes] = []
        while self.queue and self.waiting is None:
            request = self.queue.pop()
            if from_readsocket(request):
                self.last = True
            result = self.answer(request)
            if not isinstance(result, str):
                self.waiting = result
                break
            out.append(format_reply(result))
        return out
