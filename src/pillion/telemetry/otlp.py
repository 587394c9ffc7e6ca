"""Spans exported to an OpenTelemetry collector over OTLP/HTTP (protobuf), in batches, never in the way.

Theory of operation: the request path calls `submit(span)`, which appends to a bounded deque and
returns -- O(1), no I/O, no allocation beyond the deque slot. When the queue is full the span is
dropped and counted (`pillion_tracing_spans_dropped_total{reason="queue_full"}`): a collector that is
down or slow costs at most `max_queue` spans of memory, never a growing backlog or a slower request.

One background task (a `Worker`) wakes every `interval`, or as soon as `batch_size` spans are queued,
and sends what is queued then in batches of at most `batch_size` (and more while full batches wait;
a partial batch waits for the timer). Each batch is one
`ExportTraceServiceRequest` (resource attribute `service.name`, scope `pillion`) POSTed with
`content-type: application/x-protobuf` over one kept-alive connection (http_post.py), within `timeout`.

A batch that fails -- connection refused, timeout, a non-2xx answer -- is dropped, not retried: its
spans are counted (`..._dropped_total{reason="export_failed"}`, and the attempt in
`pillion_tracing_export_failures_total{reason}`), and the task waits before the next attempt, doubling
from `interval` up to `max_backoff` (with jitter, so a fleet of sidecars does not retry in step when
the collector comes back). Meanwhile spans keep queueing up to `max_queue`. Spans a collector accepts
but reports rejected (OTLP partial success) are counted as dropped with `reason="rejected"`. Nothing
here raises into its caller.

Encoding costs about 5 µs per span (upb protobuf); it runs on the event loop, in slices of
`ENCODE_SLICE` spans with a yield between them, so a full batch never holds the loop for more than
about a millisecond.

`stop()` stops the timer and sends what is queued (one attempt per batch, no backoff) within its
deadline; whatever is left is counted as dropped with `reason="shutdown"`.

This is the only module that imports protobuf and opentelemetry-proto (the `tracing` extra): import
it only when tracing is configured.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import random
import ssl
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from pillion import __version__
from pillion.runtime.tasks import Worker
from pillion.telemetry.http_post import HttpPoster, PostError
from pillion.telemetry.spans import Span
from pillion.telemetry.stats import Counter, CounterFamily, Registry

__all__ = ["ENCODE_SLICE", "ExportStats", "OtlpExporter", "encode", "resource_for"]

log = logging.getLogger("pillion.tracing")

CONTENT_TYPE = "application/x-protobuf"
SCOPE_NAME = "pillion"
# Spans encoded between two yields to the event loop (~0.7 ms of work).
ENCODE_SLICE = 128
DROP_REASONS = ("queue_full", "export_failed", "rejected", "invalid", "shutdown")
FAILURE_REASONS = ("connect", "timeout", "connection", "status", "error")


@dataclass(slots=True)
class ExportStats:
    """The exporter's counters. Declared once per registry; a second exporter (after a reload) shares
    the same families."""

    exported: Counter
    dropped: CounterFamily
    failures: CounterFamily

    @classmethod
    def declare(cls, registry: Registry) -> ExportStats:
        return cls(
            exported=_counter(
                registry,
                "pillion_tracing_spans_exported_total",
                "Spans the OTLP collector accepted.",
                (),
            ).labels(),
            dropped=_counter(
                registry,
                "pillion_tracing_spans_dropped_total",
                "Sampled spans never exported: queue_full (the export queue was full), export_failed "
                "(their batch failed), rejected (the collector refused them), invalid (ids or attributes "
                "that cannot be encoded), shutdown (left at stop).",
                ("reason",),
            ),
            failures=_counter(
                registry,
                "pillion_tracing_export_failures_total",
                "Batches whose export failed: connect, timeout, connection (lost or bad answer), "
                "status (a non-2xx answer), error (a bug: see the log).",
                ("reason",),
            ),
        )


def _counter(registry: Registry, name: str, help: str, labels: tuple[str, ...]) -> CounterFamily:
    family = registry.get(name)
    if isinstance(family, CounterFamily):
        return family
    return registry.counter(name, help, labels)


def resource_for(service_name: str) -> Resource:
    """The OTLP resource of this sidecar's spans: `service.name` and nothing else."""
    resource = Resource()
    resource.attributes.add(key="service.name").value.string_value = service_name
    return resource


SCOPE = InstrumentationScope(name=SCOPE_NAME, version=__version__)


def encode(spans: list[Span], resource: Resource) -> tuple[bytes, int]:
    """One serialized ExportTraceServiceRequest holding `spans`, and how many spans were left out for
    ids or attributes that cannot be encoded. (The exporter does the same in slices, yielding between.)"""
    request, out = _request(resource)
    bad = _add_spans(out, spans)
    return request.SerializeToString(), bad


def _request(
    resource: Resource,
) -> tuple[ExportTraceServiceRequest, RepeatedCompositeFieldContainer[OtlpSpan]]:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.CopyFrom(resource)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.CopyFrom(SCOPE)
    return request, scope_spans.spans


def _add_spans(out: RepeatedCompositeFieldContainer[OtlpSpan], spans: Iterable[Span]) -> int:
    """Append `spans` to `out`; the number left out because they could not be encoded."""
    add = out.add
    unhex = binascii.unhexlify
    bad = 0
    # Messages grown in place through add(): about three times faster than building each Span and its
    # KeyValues with keyword arguments and extending.
    for span in spans:
        before = len(out)
        try:
            s = add(
                trace_id=unhex(span.trace_id),
                span_id=unhex(span.span_id),
                name=span.name,
                kind=cast("OtlpSpan.SpanKind.ValueType", span.kind),
                start_time_unix_nano=span.start_ns,
                end_time_unix_nano=span.end_ns,
            )
            if span.parent_span_id:
                s.parent_span_id = unhex(span.parent_span_id)
            if span.error:
                s.status.code = Status.STATUS_CODE_ERROR
            attribute = s.attributes.add
            for key, value in span.attributes.items():
                v = attribute(key=key).value
                if isinstance(value, str):
                    v.string_value = value
                elif isinstance(value, bool):
                    v.bool_value = value
                elif isinstance(value, int):
                    v.int_value = value
                elif isinstance(value, float):
                    v.double_value = value
                else:
                    v.string_value = str(value)
        except (ValueError, TypeError, binascii.Error):  # bad hex, an int past 64 bits, ...
            if len(out) > before:
                del out[-1]  # the half-built span
            bad += 1
    return bad


class OtlpExporter:
    """Batches spans to `endpoint` (e.g. `http://collector:4318/v1/traces`). See the module docstring.

    `registry` may be a `Registry` (the counters are declared there, or reused if already declared) or
    an `ExportStats`. `ssl_context` is for https endpoints with a private CA; by default https uses
    `ssl.create_default_context()`.
    """

    def __init__(
        self,
        endpoint: str,
        service_name: str,
        registry: Registry | ExportStats,
        *,
        max_queue: int = 2048,
        batch_size: int = 512,
        interval: float = 1.0,
        timeout: float = 10.0,
        max_backoff: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be at least 1")
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be positive")
        if urlsplit(endpoint).path in ("", "/"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"  # the OTLP/HTTP default path
        self.endpoint = endpoint
        self.service_name = service_name
        self.max_queue = max_queue
        self.batch_size = min(batch_size, max_queue)
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self.stats = registry if isinstance(registry, ExportStats) else ExportStats.declare(registry)
        self._dropped = {reason: self.stats.dropped.labels(reason) for reason in DROP_REASONS}
        self._queue_full = self._dropped["queue_full"]
        self._failed = {reason: self.stats.failures.labels(reason) for reason in FAILURE_REASONS}
        self._resource = resource_for(service_name)
        self._poster = HttpPoster(
            endpoint, content_type=CONTENT_TYPE, timeout=timeout, ssl_context=ssl_context
        )
        self._queue: deque[Span] = deque()
        self._limit = max_queue  # 0 once stopped: one comparison in submit() covers both cases
        self._ready = asyncio.Event()  # batch_size spans are queued, or stop() was called
        self._stopping = asyncio.Event()
        self._failures = 0  # consecutive failed exports
        self._worker = Worker(self._run, name="tracing exporter")

    @property
    def queued(self) -> int:
        """Spans waiting to be sent."""
        return len(self._queue)

    def submit(self, span: Span) -> None:
        """Queue a finished, sampled span. Never blocks, never raises; counts the span if it is dropped."""
        queue = self._queue
        if len(queue) >= self._limit:
            (self._queue_full if self._limit else self._dropped["shutdown"]).value += 1
            return
        queue.append(span)
        if len(queue) == self.batch_size:
            self._ready.set()

    def start(self) -> None:
        """Start the background sender (on the running loop)."""
        if not self._stopping.is_set():
            self._worker.start()

    async def stop(self, deadline: float = 5.0) -> None:
        """Send what is queued, within `deadline` seconds; count the rest as dropped. Idempotent."""
        self._stopping.set()
        self._ready.set()
        self._limit = 0
        try:
            async with asyncio.timeout(deadline):
                await self._worker.wait_closed()  # the loop ends after its current export
                await self._flush(final=True)
        except TimeoutError:
            log.warning("tracing: spans left unexported at shutdown", extra={"spans": len(self._queue)})
        finally:
            self._worker.stop()
            await self._worker.wait_closed()
            if self._queue:
                self._dropped["shutdown"].value += len(self._queue)
                self._queue.clear()
            self._poster.close()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            if self._failures:
                await _wait(self._stopping, self._backoff())
            else:
                await _wait(self._ready, self.interval)
            self._ready.clear()
            if self._stopping.is_set():
                return  # stop() flushes
            await self._flush(final=False)

    def _backoff(self) -> float:
        delay: float = min(self.max_backoff, self.interval * float(2 ** min(self._failures - 1, 30)))
        return delay * (0.5 + random.random() / 2)

    async def _flush(self, *, final: bool) -> None:
        """Send what was queued when the task woke, then more only while full batches wait (as
        OpenTelemetry's batch processor does: a partial batch waits for the timer). `final` sends
        everything. Stops at the first failed batch."""
        queue = self._queue
        due = len(queue)
        while queue and (final or due > 0 or len(queue) >= self.batch_size):
            if self._stopping.is_set() and not final:
                return
            n = min(self.batch_size, len(queue))
            batch = [queue.popleft() for _ in range(n)]
            due -= n
            if not await self._export(batch):
                return

    async def _export(self, batch: list[Span]) -> bool:
        """Send one batch; True if the collector took it. Counts every outcome."""
        try:
            request, out = _request(self._resource)
            bad = 0
            for i in range(0, len(batch), ENCODE_SLICE):
                if i:
                    await asyncio.sleep(0)  # let requests through between slices
                bad += _add_spans(out, batch[i : i + ENCODE_SLICE])
            if bad:
                self._dropped["invalid"].value += bad
                log.warning("tracing: spans with invalid ids or attributes left out", extra={"spans": bad})
            sent = len(batch) - bad
            if not sent:
                return True
            status, body = await self._poster.post(request.SerializeToString())
        except PostError as exc:
            return self._failed_export(sent, exc.reason, str(exc))
        except asyncio.CancelledError:
            self._dropped["shutdown"].value += len(batch)
            raise
        except Exception:
            log.exception("tracing: export failed unexpectedly")
            return self._failed_export(len(batch), "error", "unexpected exception")
        if not 200 <= status < 300:
            return self._failed_export(sent, "status", f"HTTP {status}")
        rejected = _rejected(body)
        if rejected:
            self._dropped["rejected"].value += rejected
        self.stats.exported.value += sent - rejected
        if self._failures:
            log.info(
                "tracing: export recovered", extra={"endpoint": self.endpoint, "failures": self._failures}
            )
            self._failures = 0
        return True

    def _failed_export(self, spans: int, reason: str, detail: str) -> bool:
        self._failed[reason].value += 1
        self._dropped["export_failed"].value += spans
        if not self._failures:
            log.warning("tracing: export failing", extra={"endpoint": self.endpoint, "error": detail})
        self._failures += 1
        return False


def _rejected(body: bytes) -> int:
    """Spans the collector reports it rejected (OTLP partial success); 0 if the answer says nothing."""
    if not body:
        return 0
    try:
        response = ExportTraceServiceResponse.FromString(body)
    except DecodeError:
        return 0  # a JSON or empty-object answer from a lenient collector: not ours to judge
    return max(0, int(response.partial_success.rejected_spans))


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` pass."""
    if event.is_set():
        return
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
