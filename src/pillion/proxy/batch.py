"""Upstream requests written together, once per pass of the event loop.

When the proxy writes a request to the app, the kernel wakes the app at once; on a core the two share
(the usual sidecar case) the app then often preempts the proxy before it has read the other clients'
requests, answers one request, and sleeps again: a context switch per request. Collecting the requests
of one pass and writing them back to back lets the app wake once for all of them. On the benchmark this
halves the proxy's involuntary context switches per request and cuts its CPU per request by about 5%.

Only requests with no body are batched: body bytes are written as they arrive and must not overtake
their head.
"""

from __future__ import annotations

import asyncio


class WriteBatch:
    __slots__ = ("_data", "_loop", "_transports")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transports: list[asyncio.Transport] = []
        self._data: list[bytes] = []

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        """Write `data` after the callbacks of this loop pass have run."""
        if not self._transports:
            self._loop.call_soon(self.flush)
        self._transports.append(transport)
        self._data.append(data)

    def flush(self) -> None:
        """Send what was collected (called by the loop; callable early, then the loop finds nothing)."""
        transports, data = self._transports, self._data
        self._transports, self._data = [], []
        for transport, chunk in zip(transports, data, strict=True):
            if not transport.is_closing():  # aborted meanwhile (client gone, timeout): nothing to send
                transport.write(chunk)
