"""A finished span, as the proxy records it and the OTLP exporter sends it.

Theory of operation: the request path fills one `Span` per sampled request and side (SERVER for an
inbound request, CLIENT for an outbound one) and hands it to the exporter's `submit`. The record is
deliberately plain -- slots, hex ids as they came off the wire (see trace_context.py), attributes as a
small dict of str or int -- so making one costs an allocation and a few stores; everything OTLP needs
(raw id bytes, typed attribute values, status codes) is derived later, in batches, by otlp.py.

Attributes follow the OpenTelemetry HTTP semantic conventions (`http.request.method`, `url.path`,
`http.response.status_code`, `server.address`, `server.port`, `peer.service`, ...); docs/tracing.md
lists which the sidecar sets. `error` is the span's status: set for a 5xx on a SERVER span and for a
4xx/5xx or a failed upstream on a CLIENT span, as the conventions say; unset is "no error" (OTLP
STATUS_CODE_UNSET), never "ok".
"""

from __future__ import annotations

__all__ = ["CLIENT", "SERVER", "Span"]

# The OTLP SpanKind numbers, so the exporter uses the value as is.
SERVER = 2
CLIENT = 3


class Span:
    """One finished span. Ids are lowercase hex bytes; `parent_span_id` is b"" for a root span; times
    are nanoseconds since the Unix epoch (`time.time_ns()` or an equivalent offset clock)."""

    __slots__ = (
        "attributes",
        "end_ns",
        "error",
        "kind",
        "name",
        "parent_span_id",
        "span_id",
        "start_ns",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_span_id: bytes,
        name: str,
        kind: int,
        *,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, str | int],
        error: bool = False,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.name = name
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attributes = attributes
        self.error = error

    def __repr__(self) -> str:
        return (
            f"Span({self.name!r}, kind={self.kind}, trace_id={self.trace_id!r}, span_id={self.span_id!r}, "
            f"parent_span_id={self.parent_span_id!r}, error={self.error}, attributes={self.attributes!r})"
        )
