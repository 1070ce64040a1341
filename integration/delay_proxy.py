"""A Redis a few milliseconds away: a loopback TCP proxy in front of a redis-server's
unix socket that holds every chunk ``delay_s`` in each direction, in order (as a
Redis in another rack or zone is reached). It runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path


class DelayProxy:
    def __init__(self, upstream: Path, delay_s: float) -> None:
        self.upstream = upstream
        self.delay_s = delay_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            redis_r, redis_w = await asyncio.open_unix_connection(str(self.upstream))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, redis_w), self._pipe(redis_r, client_w))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each chunk leaves ``delay_s`` after it arrived; order is kept."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await held.get()
                if not data:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(data)
                await writer.drain()

        sender = loop.create_task(send())
        try:
            while data := await reader.read(65536):
                held.put_nowait((loop.time() + self.delay_s, data))
        except OSError:
            pass
        held.put_nowait((loop.time() + self.delay_s, b""))
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await sender
