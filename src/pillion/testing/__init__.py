"""Real-server test doubles and client helpers for the proxy's integration tests.

Everything here runs over real loopback sockets: the proxy's own I/O is never mocked. `ScriptableUpstream`
plays the upstream, `pillion.testing.http` plays the downstream client, `ProcessRunner` runs the sidecar
(or anything else) as a subprocess that is always stopped.
"""

from pillion.testing.http import (
    ClientConnection,
    IncompleteResponseError,
    NoResponseError,
    RawExchange,
    Response,
    http_request,
    parse_responses,
    raw_exchange,
    raw_exchange_detailed,
)
from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner, ProcessStartError, python_module
from pillion.testing.server import HttpServer, ServerRequest, ServerResponse
from pillion.testing.upstream import (
    BEHAVIOUR_HEADER,
    RecordedRequest,
    ScriptableUpstream,
    pattern_bytes,
    pattern_chunks,
    pattern_sha256,
)

__all__ = [
    "BEHAVIOUR_HEADER",
    "ClientConnection",
    "HttpServer",
    "IncompleteResponseError",
    "NoResponseError",
    "ProcessRunner",
    "ProcessStartError",
    "RawExchange",
    "RecordedRequest",
    "Response",
    "ScriptableUpstream",
    "ServerRequest",
    "ServerResponse",
    "free_port",
    "http_request",
    "parse_responses",
    "pattern_bytes",
    "pattern_chunks",
    "pattern_sha256",
    "python_module",
    "raw_exchange",
    "raw_exchange_detailed",
]
