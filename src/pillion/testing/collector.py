"""A fake OpenTelemetry collector: OTLP/HTTP protobuf on a real loopback socket, for tracing tests.

Theory of operation: `FakeCollector` is an `HttpServer` (pillion.testing.server) that accepts
`POST /v1/traces` with an `ExportTraceServiceRequest` body, decodes it with opentelemetry-proto, and
records every span as a plain `CollectedSpan` (hex ids, kind as a name, the resource's `service.name`,
attributes as a dict of Python values), so a test can assert on traces without touching protobuf:

    async with FakeCollector() as collector:
        exporter = OtlpExporter(collector.url, "a", registry)
        ...
        spans = await collector.wait_for_spans(2)

It answers the way a real collector does: 200 with an (empty, or partial-success) protobuf
`ExportTraceServiceResponse`; 400 for a body that does not decode; 404 for another path; 405 for
another method. Failures on demand:

    collector.status = 503     answer every export with that status (spans not recorded); 200 again
    collector.delay = 2.0      wait that long before answering (a slow or hung collector)
    collector.reject = 3       report that many spans rejected (OTLP partial success), record the rest
    await collector.down()     stop listening and drop connections: exports are refused
    await collector.up()       listen again, on the same port

`FakeCollector(ssl=context)` serves https (`collector.url` says so), for the exporter's TLS path.

Observations: `spans`, `exports` (one `Export` per request: its span count, content type and the
status answered), `wait_for_spans(n)`, `trace(trace_id)`.

Imports protobuf at module level: import this module only from tests that need it.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from dataclasses import dataclass, field
from typing import Self

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pillion.testing.server import HttpServer, ServerRequest, ServerResponse

__all__ = ["CollectedSpan", "Export", "FakeCollector", "decode_spans"]

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"

AttributeValue = str | int | float | bool | bytes | None


@dataclass
class CollectedSpan:
    """One span as the collector received it. Ids are lowercase hex; `parent_span_id` is "" for a root."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str  # "SERVER", "CLIENT", ... (SpanKind without its prefix)
    service_name: str
    scope_name: str
    start_ns: int
    end_ns: int
    error: bool
    attributes: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass
class Export:
    """One export request: how many spans it carried, its content type, and the status answered."""

    spans: int
    content_type: str
    status: int


def _value(value: AnyValue) -> AttributeValue:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return value.bytes_value
    return None  # arrays and maps: not something Pillion sends


def decode_spans(body: bytes) -> list[CollectedSpan]:
    """Every span in a serialized ExportTraceServiceRequest. Raises DecodeError for a bad body."""
    request = ExportTraceServiceRequest.FromString(body)
    out: list[CollectedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        service = resource.get("service.name")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    CollectedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        service_name=service if isinstance(service, str) else "",
                        scope_name=scope_spans.scope.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        error=span.status.code == Status.STATUS_CODE_ERROR,
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                    )
                )
    return out


class FakeCollector(HttpServer):
    """See the module docstring. `collector.url` is the endpoint to give an exporter."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        super().__init__(host, port, name="fake-collector")
        self.ssl = ssl
        self.spans: list[CollectedSpan] = []
        self.exports: list[Export] = []
        self.status = 200
        self.delay = 0.0
        self.reject = 0
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.address}{TRACES_PATH}"

    async def start(self) -> Self:
        if self.ssl is None:
            return await super().start()
        # HttpServer.start, with TLS: the same listening socket, wrapped.
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(self._new_connection, self.host, self.port, ssl=self.ssl)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    def trace(self, trace_id: str) -> list[CollectedSpan]:
        """The recorded spans of one trace, in arrival order."""
        return [span for span in self.spans if span.trace_id == trace_id]

    def clear(self) -> None:
        self.spans.clear()
        self.exports.clear()

    async def wait_for_spans(self, count: int, time_limit: float = 5.0) -> list[CollectedSpan]:
        """Wait until at least `count` spans were recorded; TimeoutError otherwise."""
        async with asyncio.timeout(time_limit):
            while len(self.spans) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.spans

    async def down(self) -> None:
        """Stop listening and drop every connection: connects are refused until `up()`."""
        await self.close()

    async def up(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def handle(self, request: ServerRequest, response: ServerResponse) -> None:
        if request.path != TRACES_PATH:
            await request.discard()
            await response.send(404, b"not found\n")
            return
        if request.method != "POST":
            await request.discard()
            await response.send(405, b"method not allowed\n", [("allow", "POST")])
            return
        body = await request.read()
        content_type = request.header("content-type") or ""
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            spans = decode_spans(body)
        except DecodeError:
            self.exports.append(Export(0, content_type, 400))
            await response.send(400, b"body is not an ExportTraceServiceRequest\n")
            return
        status = self.status
        self.exports.append(Export(len(spans), content_type, status))
        if status != 200:
            await response.send(status, f"status {status}\n".encode())
            return
        answer = ExportTraceServiceResponse()
        rejected = min(self.reject, len(spans))
        if rejected:
            answer.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=rejected, error_message="rejected by the test")
            )
        self.spans.extend(spans[rejected:])
        self._arrived.set()
        await response.send(200, answer.SerializeToString(), content_type=PROTOBUF)
