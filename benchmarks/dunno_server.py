"""The ceiling for the policy benchmark: a minimal asyncio server that answers DUNNO.

With transports named, it is the floor of a routing policy service instead: DUNNO at
RCPT, and at END-OF-MESSAGE ``FILTER <transport>:`` taking the transports in turn, with
no decision behind it (the end-to-end benchmark's policyd-filter variant names them
1:2:1, as its configuration weights them). Postfix then does what it does for any
routing service: a log line for each FILTER, and delivery through that transport.

Usage: python benchmarks/dunno_server.py PORT [TRANSPORT ...]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\n\n")
            writer.write(b"action=DUNNO\n\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def filtering(transports: list[str]) -> Handler:
    replies = itertools.cycle([f"action=FILTER {t}:\n\n".encode() for t in transports])

    async def serve_filter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\n\n")
                routed = b"protocol_state=END-OF-MESSAGE" in request
                writer.write(next(replies) if routed else b"action=DUNNO\n\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return serve_filter


async def main(port: int, transports: list[str]) -> None:
    handler = filtering(transports) if transports else serve
    server = await asyncio.start_server(handler, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
