"""A recording asyncio protocol, for tests of transports (the TLS transport, multiplexed streams).

`RecordingProtocol` notes every callback in order (consecutive `data_received` calls as one event), the
bytes received and the size of each `data_received`, and what `connection_lost` was given. With `echo`
it writes back what it gets; with `pause` it pauses reading as soon as it has its transport;
`keep_open` is what `eof_received` returns.
"""

from __future__ import annotations

import asyncio
from typing import cast


class RecordingProtocol(asyncio.Protocol):
    def __init__(self, *, echo: bool = False, pause: bool = False, keep_open: bool = False) -> None:
        self.events: list[str] = []
        self.data = bytearray()
        self.sizes: list[int] = []  # one per data_received call
        self.lost: list[Exception | None] = []
        self.echo = echo
        self.pause = pause
        self.keep_open = keep_open
        self._transport: asyncio.Transport | None = None

    @property
    def transport(self) -> asyncio.Transport:
        assert self._transport is not None
        return self._transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.events.append("connection_made")
        if self.pause:
            self._transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.events[-1] != "data_received":
            self.events.append("data_received")
        self.data += data
        self.sizes.append(len(data))
        if self.echo:
            self.transport.write(data)

    def eof_received(self) -> bool:
        self.events.append("eof_received")
        return self.keep_open

    def pause_writing(self) -> None:
        self.events.append("pause_writing")

    def resume_writing(self) -> None:
        self.events.append("resume_writing")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("connection_lost")
        self.lost.append(exc)
