"""One connection to an endpoint: writes requests, parses responses, hands the pieces downstream.

Theory of operation: the connection is idle in its endpoint's pool or bound to exactly one request
(`self.down`, the downstream connection answering it). httptools calls back with the status, headers
and body pieces; each is passed straight to the downstream side, which frames them for the client. When
the response ends the downstream side decides whether this connection goes back to the pool.

Responses to HEAD carry a length but no body, which httptools cannot be told about; so for HEAD the
head callback raises `_NoBody` to stop the parser, and the connection starts a fresh parser.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from pillion.proxy.batch import gathers

perf_counter: Final = time.perf_counter  # (a C static in the compiled build)

# A parser with no connection behind it: what a closed connection's parser fields point at (_unhook).
_DETACHED: Final = HttpResponseParser(None)

if TYPE_CHECKING:
    from pillion.proxy.cluster import Endpoint
    from pillion.proxy.downstream import DownstreamConnection


class _NoBody(Exception):
    """Raised from the head callback to end a response that has no body (HEAD)."""


class _Broken(Exception):
    """Raised from a callback: the app broke the protocol (a response nobody asked for, a bad status)."""


class UpstreamConnection:
    """One connection to an endpoint; an asyncio protocol by shape, like DownstreamConnection."""

    __slots__ = (
        "_feed",
        "_is_closing",
        "_keep_alive",
        "_status",
        "_write",
        "closed",
        "discarding",
        "down",
        "endpoint",
        "expect_no_body",
        "feeding",
        "gathered",
        "headers",
        "idle_since",
        "parser",
        "pending",
        "phrase",
        "read_paused",
        "release_at",
        "reused",
        "transport",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.gathered = False  # the transport gathers writes itself (batch.gathers): never held here
        self._new_parser()
        self.down: DownstreamConnection | None = None
        # Reading a response nobody will see (a try being retried) to its end, so the connection can
        # go back to the pool; given up if the response does not end within the read that started it.
        self.discarding = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.phrase = b""
        self.idle_since = 0.0
        self.reused = False
        self.closed = False
        self.read_paused = False
        self.expect_no_body = False
        self.pending: bytes | None = None  # a request head waiting for the end of the loop pass
        # Pooling waits for the end of the read that finished a response: bytes after the response in
        # that read are a second response nobody asked for, and must not answer the next request.
        self.feeding = False
        self.release_at = 0.0  # > 0: released during the current read, pooled once it is parsed

    # -- lifecycle -------------------------------------------------------------------------------

    def _new_parser(self) -> None:
        self.parser = parser = HttpResponseParser(self)
        # Bound methods called for every response (see DownstreamConnection.__init__).
        self._feed: Callable[[bytes], None] = parser.feed_data
        self._status: Callable[[], int] = parser.get_status_code
        self._keep_alive: Callable[[], bool] = parser.should_keep_alive

    def _unhook(self) -> None:
        """Let go of the parser, which holds this connection's methods as its callbacks: the same
        reference cycle as DownstreamConnection._unhook breaks."""
        self.parser = parser = _DETACHED
        self._feed = parser.feed_data
        self._status = parser.get_status_code
        self._keep_alive = parser.should_keep_alive

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self._write: Callable[[bytes], None] = t.write
        self._is_closing: Callable[[], bool] = t.is_closing
        self.gathered = gathers(t)
        cluster = self.endpoint.cluster
        cluster.active.value += 1
        cluster.opened.value += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        cluster = self.endpoint.cluster
        cluster.active.value -= 1
        cluster.connection_closed()
        down = self.down
        if down is not None:
            self.down = None
            down.upstream_lost(self)
        else:
            self.endpoint.forget(self)
        self._unhook()

    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self._is_closing()

    def close(self) -> None:
        self.down = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection mid-message: it can never be reused."""
        self.down = None
        self.discarding = False
        if self.transport is not None:
            self.transport.abort()

    # -- request side ----------------------------------------------------------------------------

    def send_pending(self) -> None:
        data = self.pending
        if data is not None:
            self.pending = None
            if self.transport is not None and not self._is_closing():  # not aborted meanwhile
                self._write(data)

    def pause_writing(self) -> None:
        if self.down is not None:
            self.down.upstream_full(True)

    def resume_writing(self) -> None:
        if self.down is not None:
            self.down.upstream_full(False)

    def discard(self) -> None:
        """Read the rest of the current response and drop it (its request is being retried)."""
        self.down = None
        self.discarding = True

    def _discarded(self) -> None:
        self.discarding = False
        if self._keep_alive():
            self.release(perf_counter())
        else:
            self.close()

    def release(self, now: float) -> None:
        """The exchange is over and the connection is clean: back to the pool (at the end of the read
        in progress, if any)."""
        self.down = None
        if self.feeding:
            self.release_at = now
            return
        self.reused = True
        if self.read_paused:
            self.read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self.endpoint.give_back(self, now)

    def set_reading(self, on: bool) -> None:
        transport = self.transport
        if transport is None or self.read_paused == (not on):
            return  # already as asked
        self.read_paused = not on
        if on:
            transport.resume_reading()
        else:
            transport.pause_reading()

    # -- response side: httptools callbacks ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        down = self.down
        if down is None:
            # Bytes while idle: the app broke protocol. Never reuse this connection.
            self.abort()
            return
        self.feeding = True
        try:
            self._feed(data)
            down.flush()
            if self.discarding:
                # A retried response that did not end within this read: rather than wait on it with
                # no deadline, drop the connection.
                self.abort()
        except HttpParserUpgrade:  # a 101 nobody asked for (Pillion forwards no Upgrade)
            self._broken(down)
        except HttpParserError as exc:
            if isinstance(exc.__context__, _NoBody):  # (httptools wraps what a callback raised)
                self._new_parser()
            else:
                self._broken(down)
        finally:
            self.feeding = False
        if self.release_at:
            now, self.release_at = self.release_at, 0.0
            if not self.closed:
                self.release(now)

    def _broken(self, down: DownstreamConnection) -> None:
        self.release_at = 0.0  # never pooled
        self.down = None
        self.abort()
        down.upstream_failed(self, "upstream_protocol_error")

    def eof_received(self) -> bool | None:
        # A close-delimited body ends at EOF; httptools has no finish() call, so tell the request here.
        down = self.down
        if down is not None and down.response_started and down.close_delimited:
            self.down = None
            down.response_complete(self, keep=False)
        return None

    def on_status(self, phrase: bytes) -> None:
        if self.release_at:
            raise _Broken  # a second response in the read that finished the first: nobody asked for it
        self.phrase = phrase

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        down = self.down
        assert down is not None
        status = self._status()
        if not 100 <= status <= 599 or status == 101:
            raise _Broken  # outside HTTP's range, or a protocol switch Pillion never asked for
        if status < 200:
            for name, _ in self.headers:
                if name.lower() in (b"content-length", b"transfer-encoding"):
                    raise _Broken  # an interim response has no content (RFC 9110 §15.2)
            down.interim_response(status, self.phrase)
            self.headers = []
            return
        down.response_head(status, self.phrase, self.headers, self._keep_alive())
        if self.expect_no_body:
            down = self.down  # None if response_head chose to retry and discard this response
            self.down = None
            if down is not None:
                down.response_complete(self, keep=self._keep_alive())
            elif self.discarding:
                self._discarded()
            raise _NoBody

    def on_body(self, body: bytes) -> None:
        down = self.down
        if down is not None:
            down.response_body(body)

    def on_message_complete(self) -> None:
        down = self.down
        if down is not None and down.response_started:
            self.down = None
            down.response_complete(self, keep=self._keep_alive())
        elif self.discarding:
            self._discarded()
