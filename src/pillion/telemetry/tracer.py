"""A listener's tracer: the span each request makes on it, from the trace context to the exported span.

Theory of operation. An inbound listener (calls to the app) makes SERVER spans, an outbound one (the
app's own calls) CLIENT spans, so a call from app A to app B is A's CLIENT span with B's SERVER span as
its child, and the app's own spans in between when it forwards `traceparent`. The downstream side calls
`begin` with the trace headers it took out of the request and appends what `begin` gives back to the
forwarded head; when the exchange is recorded it calls `end`, which builds the span (OpenTelemetry HTTP
semantic attributes) only for sampled requests and hands it to the exporter, an O(1) append.

This module is imported only when `tracing` is configured; the exporter (and protobuf) with it.
"""

from __future__ import annotations

import time

from pillion.telemetry.otlp import OtlpExporter
from pillion.telemetry.spans import CLIENT, SERVER, Span
from pillion.telemetry.trace_context import (
    TRACE_HEADERS,
    Sampler,
    TraceContext,
    extract,
    inject,
    root_context,
    root_line,
    root_sampled,
    start_span,
)

__all__ = ["TRACE_HEADERS", "Sampler", "Tracer"]


class Tracer:
    __slots__ = ("client", "exporter", "kind", "sampler")

    def __init__(self, sampler: Sampler, exporter: OtlpExporter, *, outbound: bool) -> None:
        self.sampler = sampler
        self.exporter = exporter
        self.client = outbound
        self.kind = CLIENT if outbound else SERVER

    def begin(self, headers: list[tuple[bytes, bytes]] | None) -> tuple[TraceContext | None, bytes, int]:
        """This hop's context, the trace header lines to forward, and the span's start (ns; 0 when the
        span is not sampled, and `end` need not be called). A request that brought no trace and that
        the sampler leaves out gets no context, only its line: the trace id is in the lines
        (`trace_context.trace_id_of`)."""
        if headers:
            ctx = start_span(extract(headers), self.sampler)
            return ctx, inject(ctx), time.time_ns() if ctx.sampled > 0 else 0
        line = root_line(self.sampler)
        if root_sampled(line):
            return root_context(line), line, time.time_ns()
        return None, line, 0

    def end(
        self,
        ctx: TraceContext,
        start_ns: int,
        *,
        method: bytes,
        target: bytes,
        host: bytes,
        status: int,
        cluster: str,
    ) -> None:
        if not ctx.sampled:
            return
        q = target.find(b"?")
        attributes: dict[str, str | int] = {
            "http.request.method": method.decode("latin-1"),
            "url.path": (target if q < 0 else target[:q]).decode("utf-8", "replace"),
            "http.response.status_code": status,
        }
        if host and host != b"-":
            text = host.decode("latin-1")
            name, sep, port = text.rpartition(":")
            if sep and port.isdigit() and (":" not in name or name.endswith("]")):  # ([::1]:80 too)
                attributes["server.address"] = name
                attributes["server.port"] = int(port)
            else:
                attributes["server.address"] = text
        if self.client and cluster:
            attributes["peer.service"] = cluster
        # A server's error is its own 5xx; a client's is any failed call (OTel HTTP conventions).
        error = status >= 500 or status == 0 or (self.client and status >= 400)
        self.exporter.submit(
            Span(
                ctx.trace_id,
                ctx.span_id,
                ctx.parent_id,
                method.decode("latin-1"),
                self.kind,
                start_ns=start_ns,
                end_ns=time.time_ns(),
                attributes=attributes,
                error=error,
            )
        )
