"""A multiplexed session (tls/mux.py) sending with the WriteBatch (proxy/batch.py `join`).

The senders here stand in for the proxy's connections, which the compiled build's batch only accepts as
the real classes: so this runs on the pure-Python install only (unit tests are not run compiled). The
session itself is real, on a real socket pair.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

import uvloop

from pillion.proxy.batch import WriteBatch
from pillion.testing.protocols import RecordingProtocol
from pillion.tls.mux import DATA, HEAD, Session


def frame(sid: int, kind: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(sid, kind, len(payload)) + payload


def test_a_session_whose_own_flush_is_pending_still_leaves_with_the_batch_that_writes_to_it() -> None:
    """A session that queued a frame outside any batch (its own end-of-pass flush pending) and then gets
    an answer's bytes while a WriteBatch sends: everything leaves right after the client phase, before any
    upstream is written, and the pending flush then finds nothing."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, peer = socket.socketpair()
        peer.setblocking(False)
        session = Session(loop, None)
        transport, _ = await loop.connect_accepted_socket(lambda: cast(asyncio.Protocol, session), ours)
        try:
            stream = session.open(RecordingProtocol())  # its announcement: queued, its own flush pending
            assert session.scheduled and not session.joined
            sid = stream.sid
            seen_by_upstream: list[bytes] = []

            class Client:
                def send_pending(self) -> None:
                    stream.write(b"answer")

            class Upstream:
                def send_pending(self) -> None:
                    try:
                        seen_by_upstream.append(peer.recv(65536))
                    except BlockingIOError:
                        seen_by_upstream.append(b"")

            batch = WriteBatch(loop)
            batch.add_upstream(cast(Any, Upstream()))
            batch.add_client(cast(Any, Client()))
            batch.flush()
            assert seen_by_upstream == [frame(sid, DATA) + frame(sid, DATA, b"answer")]
            await asyncio.sleep(0)
            assert not session.scheduled and not session.out  # the pending flush had nothing to send
            await asyncio.sleep(0.05)
            try:
                late = peer.recv(65536)
            except BlockingIOError:
                late = b""
            assert late == b""
        finally:
            transport.close()
            peer.close()

    uvloop.run(main())
