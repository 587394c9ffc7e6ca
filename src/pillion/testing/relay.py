"""A recording TCP relay on a real loopback socket: what one side sent, as the wire carried it.

Put it between two sidecars to see the bytes between them (are they TLS?) without a packet capture.
Each accepted connection is relayed to `target` both ways, with half-close passed on; `sent` collects
everything the connecting side sent (the first `limit` bytes), `connections` counts them. Either
direction can be held: while `forth` is clear, what the connecting side sends is not passed on (and,
with a small `chunk`, soon not read, so the sender's buffers fill); while `back` is clear, the same for
what the target sends. `chunk` is the relay's read size, stream limit and receive buffer. `async with`
closes the listening socket and every relayed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import TracebackType
from typing import Self


class RecordingRelay:
    def __init__(
        self, target_host: str, target_port: int, *, limit: int = 1 << 20, chunk: int = 65536
    ) -> None:
        self.target = (target_host, target_port)
        self.limit = limit
        self.chunk = chunk
        self.forth = asyncio.Event()  # clear: hold what the connecting side sends
        self.back = asyncio.Event()  # clear: hold what the target sends
        self.forth.set()
        self.back.set()
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
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=self.chunk)
        if self.chunk < 65536:
            for sock in self._server.sockets:  # (inherited by the accepted sockets)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.chunk)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        self.forth.set()
        self.back.set()
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
            up_reader, up_writer = await asyncio.open_connection(*self.target, limit=self.chunk)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, self.forth, record=True),
                self._pipe(up_reader, writer, self.back),
            )
        finally:
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        gate: asyncio.Event,
        *,
        record: bool = False,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(self.chunk):
                if record and len(self.sent) < self.limit:
                    self.sent += data[: self.limit - len(self.sent)]
                await gate.wait()  # (after the read too: bytes read just before the gate closed wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
