"""The floor of an asyncio Protocol policy server: DUNNO to every request, framing
only (no parsing), written as policyd's transport is (a Protocol, not streams).

Usage: python benchmarks/dunno_protocol.py PORT
"""

from __future__ import annotations

import asyncio
import sys

REPLY = b"action=DUNNO\n\n"


class Dunno(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        requests = buffer.count(b"\n\n")
        if requests and self.transport is not None:
            self.transport.write(REPLY * requests)
            buffer = buffer[buffer.rfind(b"\n\n") + 2 :]
        self.buffer = buffer


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Dunno, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
