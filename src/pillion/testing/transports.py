"""The proxy's connections without sockets: a transport that records writes, and a listener whose
timers and write batch are driven by hand (for `bench/hotpath.py` and unit tests of the write path).

`RecordingTransport` has enough of asyncio.Transport for `DownstreamConnection` and
`UpstreamConnection`: each `write` (or `writelines`, joined) is one entry of `written`.
`hand_driven(listener)` gives a listener the deadlines its start would, and a WriteBatch whose
end-of-pass callback is never scheduled: the caller calls `listener.batch.flush()` where the loop
would, so whatever is written before that was written at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pillion.proxy.batch import WriteBatch
from pillion.proxy.deadlines import Deadlines
from pillion.proxy.downstream import DownstreamConnection
from pillion.proxy.listener import HttpListener


class RecordingTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.aborted = False  # closed by abort(), not close()

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.written.append(b"".join(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.aborted = True


class _NoLoop:
    def call_soon(self, callback: Any) -> None:
        pass  # the batch's flush is called by hand


def hand_driven(listener: HttpListener) -> HttpListener:
    """`listener`, ready for connections fed by hand inside a running loop (see the module docstring)."""
    loop = asyncio.get_running_loop()
    listener.deadlines = Deadlines(loop, DownstreamConnection.timed_out)
    listener.try_deadlines = Deadlines(loop, DownstreamConnection.try_timed_out)
    listener.batch = WriteBatch(_NoLoop())  # type: ignore[arg-type]
    return listener
