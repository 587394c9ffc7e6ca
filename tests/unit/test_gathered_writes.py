"""Connections on a transport that gathers writes itself (a multiplexed stream) write at once; the others
wait in the listener's WriteBatch for the end of the loop pass (proxy/batch.py `gathers`).

The proxy's real connection classes over fake transports that record what is written; the loop never
runs, so whatever is written before the batch's flush was written at once.
"""

from __future__ import annotations

import pytest
import uvloop

from pillion.proxy.batch import gathers
from pillion.proxy.downstream import DownstreamConnection
from pillion.proxy.listener import HttpListener
from pillion.proxy.upstream import UpstreamConnection
from pillion.runtime.runtime import Runtime
from pillion.testing.sidecar import sidecar_config
from pillion.testing.transports import RecordingTransport, hand_driven

REQUEST = b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n"
POST = b"POST /y HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\n\r\nbody"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Gathering(RecordingTransport):
    """A transport that says it gathers its writes, as a multiplexed stream does."""

    gathers_writes = True


def test_only_a_transport_that_says_so_gathers() -> None:
    class Truthy(RecordingTransport):
        gathers_writes = 1  # not True: not a claim to rely on

    assert gathers(Gathering()) and not gathers(RecordingTransport()) and not gathers(Truthy())


@pytest.mark.parametrize("down_gathers", [False, True], ids=["client", "client-on-stream"])
@pytest.mark.parametrize("up_gathers", [False, True], ids=["upstream", "upstream-on-stream"])
def test_writes_on_a_gathering_transport_go_at_once_and_the_others_wait_for_the_pass(
    down_gathers: bool, up_gathers: bool
) -> None:
    async def main() -> None:
        runtime = Runtime(sidecar_config(["127.0.0.1:1"]))
        listener = runtime.listeners[0]
        assert isinstance(listener, HttpListener)
        batch = hand_driven(listener).batch
        endpoint = runtime.clusters["app"].endpoints[0]
        up_t = Gathering() if up_gathers else RecordingTransport()
        up = UpstreamConnection(endpoint)
        up.connection_made(up_t)  # type: ignore[arg-type]
        endpoint.give_back(up, 0.0)
        down_t = Gathering() if down_gathers else RecordingTransport()
        down = DownstreamConnection(listener)
        down.connection_made(down_t)  # type: ignore[arg-type]
        assert (down.gathered, up.gathered) == (down_gathers, up_gathers)

        down.data_received(REQUEST)  # a body-less request: held, unless its upstream gathers
        assert [w.split(b"\r\n")[0] for w in up_t.written] == ([b"GET /x HTTP/1.1"] if up_gathers else [])
        batch.flush()
        assert [w.split(b"\r\n")[0] for w in up_t.written] == [b"GET /x HTTP/1.1"]

        up.data_received(RESPONSE)  # the answer: held, unless the client's transport gathers
        assert [w.endswith(b"\r\n\r\nok") for w in down_t.written] == ([True] if down_gathers else [])
        batch.flush()
        assert [w.endswith(b"\r\n\r\nok") for w in down_t.written] == [True]

        down.data_received(POST)  # a head with its body goes at once either way (never held)
        assert up_t.written[-1].startswith(b"POST /y HTTP/1.1\r\n") and up_t.written[-1].endswith(b"body")

    uvloop.run(main())
