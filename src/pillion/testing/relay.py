"""A recording TCP relay on a real loopback socket: what one side sent, as the wire carried it.

Put it between two sidecars to see the bytes between them (are they TLS?) without a packet capture.
Each accepted connection is relayed to `target` both ways, with half-close passed on; `sent` collects
everything the connecting side sent (the first `limit` bytes), `connections` counts them. `async with`
closes the listening socket and every relayed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self


class RecordingRelay:
    def __init__(self, target_host: str, target_port: int, *, limit: int = 1 << 20) -> None:
        self.target = (target_host, target_port)
        self.limit = limit
        self.sent = bytearray()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # (closing, not cancelling: the pipes end on their own)
            writer.transport.abort()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 5.0)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, record=True), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)
            self._tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, record: bool = False
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if record and len(self.sent) < self.limit:
                    self.sent += data[: self.limit - len(self.sent)]
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
