"""The OTLP exporter against a fake collector on a real loopback socket: batching, what arrives (ids,
kinds, typed attributes, service.name), and every way an export fails -- collector down, 503, slow,
partial rejection -- counted, bounded in memory, never raised. Each test runs on both event loops and
checks that no task outlives it."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from pillion.telemetry.http_post import HttpPoster
from pillion.telemetry.otlp import OtlpExporter
from pillion.telemetry.prometheus import render
from pillion.telemetry.spans import CLIENT, SERVER, Span
from pillion.telemetry.stats import Registry
from pillion.telemetry.trace_context import (
    SAMPLED,
    Sampler,
    TraceContext,
    extract,
    inject,
    new_span_id,
    new_trace_id,
    start_span,
)
from pillion.testing.collector import FakeCollector, decode_spans
from pillion.testing.loops import Run, until
from pillion.testing.metrics import sample_sum
from pillion.testing.ports import free_port
from pillion.tls.ca import init_ca, issue_svid

HOST = "127.0.0.1"


def make_span(n: int = 0, **overrides: Any) -> Span:
    values: dict[str, Any] = {
        "trace_id": new_trace_id(),
        "span_id": new_span_id(),
        "parent_span_id": b"",
        "name": "GET",
        "kind": SERVER,
        "start_ns": 1_700_000_000_000_000_000 + n,
        "end_ns": 1_700_000_000_001_000_000 + n,
        "attributes": {"http.request.method": "GET", "http.response.status_code": 200, "n": n},
    }
    values.update(overrides)
    return Span(**values)


@asynccontextmanager
async def exporting(
    url: str, registry: Registry | None = None, **options: Any
) -> AsyncIterator[OtlpExporter]:
    exporter = OtlpExporter(url, options.pop("service_name", "a"), registry or Registry(), **options)
    exporter.start()
    try:
        yield exporter
    finally:
        await exporter.stop(deadline=options.get("timeout", 2.0))


def dropped(exporter: OtlpExporter, reason: str) -> float:
    return exporter.stats.dropped.labels(reason).value


def failures(exporter: OtlpExporter, reason: str) -> float:
    return exporter.stats.failures.labels(reason).value


def exported(exporter: OtlpExporter) -> float:
    return exporter.stats.exported.value


# -- what arrives --------------------------------------------------------------------------------------


def test_spans_arrive_with_ids_kinds_attributes_and_service_name(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            trace = new_trace_id()
            client_id, server_id = new_span_id(), new_span_id()
            client = Span(
                trace, client_id, b"", "GET", CLIENT,
                start_ns=1_700_000_000_000_000_001, end_ns=1_700_000_000_000_900_000,
                attributes={
                    "http.request.method": "GET",
                    "url.path": "/orders/42",
                    "http.response.status_code": 503,
                    "server.address": "orders.default",
                    "server.port": 8080,
                    "peer.service": "orders",
                },
                error=True,
            )  # fmt: skip
            server = Span(
                trace, server_id, client_id, "GET", SERVER,
                start_ns=1_700_000_000_000_100_000, end_ns=1_700_000_000_000_800_000,
                attributes={"http.request.method": "GET", "http.response.status_code": 200},
            )  # fmt: skip
            async with exporting(collector.url, service_name="checkout", interval=0.05) as exporter:
                exporter.submit(client)
                exporter.submit(server)
                await collector.wait_for_spans(2)
            got = {span.span_id: span for span in collector.trace(trace.decode())}
            assert set(got) == {client_id.decode(), server_id.decode()}
            c, s = got[client_id.decode()], got[server_id.decode()]
            assert (c.kind, s.kind) == ("CLIENT", "SERVER")
            assert c.parent_span_id == "" and s.parent_span_id == client_id.decode()
            assert c.service_name == s.service_name == "checkout"
            assert c.scope_name == "pillion"
            assert c.name == "GET"
            assert (c.start_ns, c.end_ns) == (1_700_000_000_000_000_001, 1_700_000_000_000_900_000)
            assert c.attributes == client.attributes  # str stays str, int stays int
            assert isinstance(c.attributes["server.port"], int)
            assert c.error and not s.error
            assert [e.content_type for e in collector.exports] == ["application/x-protobuf"]
            assert exported(exporter) == 2

    run(main())


def test_two_sidecars_make_one_trace(run: Run) -> None:
    """The building blocks as the proxy uses them: sidecar A (outbound, samples everything) and sidecar
    B (inbound, samples nothing of its own) export to one collector; the trace is connected anyway."""

    def hop(headers: list[tuple[bytes, bytes]], sampler: Sampler) -> tuple[TraceContext, bytes]:
        ctx = start_span(extract(headers), sampler)
        return ctx, inject(ctx)

    def as_pairs(block: bytes) -> list[tuple[bytes, bytes]]:
        lines = block.removesuffix(b"\r\n").split(b"\r\n")
        return [(name, value) for name, _, value in (line.partition(b": ") for line in lines)]

    def record(ctx: TraceContext, kind: int) -> Span:
        now = time.time_ns()
        return Span(
            ctx.trace_id, ctx.span_id, ctx.parent_id, "GET", kind,
            start_ns=now, end_ns=now + 1000, attributes={"http.request.method": "GET"},
        )  # fmt: skip

    async def main() -> None:
        async with FakeCollector() as collector:
            registry = Registry()
            a = OtlpExporter(collector.url, "a", registry, interval=0.02)
            b = OtlpExporter(collector.url, "b", registry, interval=0.02)
            a.start()
            b.start()
            ctx_a, to_b = hop([(b"host", b"b"), (b"accept", b"*/*")], Sampler(1.0))  # app A sent no trace
            ctx_b, to_app = hop(as_pairs(to_b), Sampler(0.0))  # B follows A's decision, not its own
            assert ctx_b.sampled == SAMPLED
            b.submit(record(ctx_b, SERVER))
            a.submit(record(ctx_a, CLIENT))
            await collector.wait_for_spans(2)
            await a.stop()
            await b.stop()
        spans = {span.service_name: span for span in collector.spans}
        assert spans["a"].trace_id == spans["b"].trace_id == ctx_a.trace_id.decode()
        assert (spans["a"].kind, spans["b"].kind) == ("CLIENT", "SERVER")
        assert spans["a"].parent_span_id == ""
        assert spans["b"].parent_span_id == spans["a"].span_id
        app_sees = extract(as_pairs(to_app))
        assert app_sees is not None
        assert app_sees.trace_id == ctx_a.trace_id
        assert app_sees.span_id.decode() == spans["b"].span_id
        assert app_sees.sampled == SAMPLED

    run(main())


def test_full_batches_go_at_once_the_rest_at_the_interval(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            async with exporting(collector.url, batch_size=10, interval=1.0) as exporter:
                started = time.monotonic()
                for i in range(25):
                    exporter.submit(make_span(i))
                await collector.wait_for_spans(20)
                assert time.monotonic() - started < 0.9  # the full batches did not wait for the timer
                assert [e.spans for e in collector.exports][:2] == [10, 10]
                await collector.wait_for_spans(25)  # the last 5 at the interval, without stop()
                assert [e.spans for e in collector.exports] == [10, 10, 5]
            assert sorted(span.attributes["n"] for span in collector.spans) == list(range(25))  # type: ignore[type-var]
            assert collector.connections_accepted == 1  # one kept-alive connection for every batch
            assert exported(exporter) == 25

    run(main())


def test_stop_flushes_what_is_queued(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            exporter = OtlpExporter(collector.url, "a", Registry(), interval=60.0, batch_size=4)
            exporter.start()
            for i in range(4):
                exporter.submit(make_span(i))
            await collector.wait_for_spans(4)  # a full batch goes at once
            for i in range(3):
                exporter.submit(make_span(i))
            await asyncio.sleep(0.05)
            assert len(collector.spans) == 4  # the rest waits for the interval...
            await exporter.stop()  # ...or for stop()
            assert len(collector.spans) == 7
            assert exported(exporter) == 7
            assert exporter.queued == 0
            exporter.submit(make_span())  # after stop: counted, not queued
            assert exporter.queued == 0
            assert dropped(exporter, "shutdown") == 1

    run(main())


def test_stop_without_start_still_flushes(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            exporter = OtlpExporter(collector.url, "a", Registry())
            exporter.submit(make_span())
            await exporter.stop()
            assert len(collector.spans) == 1

    run(main())


def test_endpoint_without_a_path_gets_the_otlp_default(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            exporter = OtlpExporter(f"http://{collector.address}", "a", Registry())
            assert exporter.endpoint == collector.url
            exporter.submit(make_span())
            await exporter.stop()
            assert len(collector.spans) == 1

    run(main())


# -- failures --------------------------------------------------------------------------------------


def test_collector_down_drops_and_counts_with_memory_bounded_by_max_queue(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        url = f"http://{HOST}:{free_port()}/v1/traces"
        registry = Registry()
        async with exporting(
            url, registry, max_queue=50, batch_size=10, interval=0.02, max_backoff=0.05
        ) as ex:
            submitted = 0
            for _ in range(20):
                for i in range(25):
                    ex.submit(make_span(i))  # never raises
                    submitted += 1
                    assert ex.queued <= 50
                await asyncio.sleep(0.01)
            await until(lambda: failures(ex, "connect") >= 3)
            assert dropped(ex, "queue_full") > 0
            assert exported(ex) == 0
        # Everything submitted is accounted for once stopped: nothing exported, nothing left.
        total = sum(dropped(ex, r) for r in ("queue_full", "export_failed", "shutdown"))
        assert total == submitted
        text = render(registry)
        assert sample_sum(text, "pillion_tracing_spans_dropped_total") == submitted
        assert sample_sum(text, "pillion_tracing_export_failures_total", reason="connect") >= 3
        # One warning when exports start failing, not one per attempt.
        warnings = [r for r in caplog.records if r.getMessage() == "tracing: export failing"]
        assert len(warnings) == 1

    with caplog.at_level(logging.INFO, logger="pillion.tracing"):
        run(main())


def test_collector_going_down_and_coming_back(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        collector = FakeCollector()
        async with collector, exporting(collector.url, interval=0.02, max_backoff=0.05) as exporter:
            exporter.submit(make_span(1))
            await collector.wait_for_spans(1)
            await collector.down()
            exporter.submit(make_span(2))
            await until(lambda: failures(exporter, "connect") + failures(exporter, "connection") >= 1)
            assert dropped(exporter, "export_failed") == 1
            await collector.up()
            exporter.submit(make_span(3))
            await collector.wait_for_spans(2)
            assert [span.attributes["n"] for span in collector.spans] == [1, 3]
            await until(lambda: exported(exporter) == 2)
        assert any(r.getMessage() == "tracing: export recovered" for r in caplog.records)

    with caplog.at_level(logging.INFO, logger="pillion.tracing"):
        run(main())


def test_collector_answering_503_is_counted_then_recovers(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            collector.status = 503
            async with exporting(collector.url, interval=0.02, max_backoff=0.05) as exporter:
                for i in range(3):
                    exporter.submit(make_span(i))
                await until(lambda: failures(exporter, "status") >= 1)
                assert dropped(exporter, "export_failed") == 3
                assert collector.spans == []
                collector.status = 200
                exporter.submit(make_span(9))
                await collector.wait_for_spans(1)
                await until(lambda: exported(exporter) == 1)
            assert {e.status for e in collector.exports} == {503, 200}

    run(main())


def test_slow_collector_times_out(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            collector.delay = 1.0
            async with exporting(collector.url, interval=0.02, timeout=0.1, max_backoff=0.05) as exporter:
                exporter.submit(make_span())
                await until(lambda: failures(exporter, "timeout") >= 1)
                assert dropped(exporter, "export_failed") == 1
                collector.delay = 0.0
                exporter.submit(make_span())
                await collector.wait_for_spans(1)

    run(main())


def test_stop_gives_up_at_its_deadline(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            collector.delay = 10.0
            exporter = OtlpExporter(collector.url, "a", Registry(), interval=60.0, timeout=10.0)
            exporter.start()
            for i in range(5):
                exporter.submit(make_span(i))
            started = time.monotonic()
            await exporter.stop(deadline=0.2)
            assert time.monotonic() - started < 1.0
            assert dropped(exporter, "shutdown") == 5
            assert exported(exporter) == 0

    run(main())


def test_partial_success_rejections_are_counted(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            collector.reject = 2
            async with exporting(collector.url, interval=0.02) as exporter:
                for i in range(5):
                    exporter.submit(make_span(i))
                await collector.wait_for_spans(3)
                await until(lambda: exported(exporter) == 3)
                assert dropped(exporter, "rejected") == 2

    run(main())


def test_spans_that_cannot_be_encoded_are_left_out(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector, exporting(collector.url, interval=0.02) as exporter:
            exporter.submit(make_span(1, trace_id=b"not hex"))
            exporter.submit(make_span(2, attributes={"too.big": 2**70}))
            exporter.submit(make_span(3))
            await collector.wait_for_spans(1)
            await until(lambda: exported(exporter) == 1)
            assert dropped(exporter, "invalid") == 2
            assert [span.attributes["n"] for span in collector.spans] == [3]

    run(main())


def test_a_kept_alive_connection_the_collector_closed_is_replaced_without_a_failure(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector, exporting(collector.url, interval=0.02) as exporter:
            exporter.submit(make_span(1))
            await collector.wait_for_spans(1)
            collector.close_connections()  # the collector's idle timeout, say
            await asyncio.sleep(0.05)
            exporter.submit(make_span(2))
            await collector.wait_for_spans(2)
            assert collector.connections_accepted == 2
            assert sum(failures(exporter, r) for r in ("connect", "connection", "timeout", "status")) == 0

    run(main())


def test_a_second_exporter_shares_the_counters(run: Run) -> None:
    async def main() -> None:
        async with FakeCollector() as collector:
            registry = Registry()
            first = OtlpExporter(collector.url, "a", registry)
            first.submit(make_span())
            await first.stop()
            second = OtlpExporter(collector.url, "a", registry)  # e.g. after a reload
            second.submit(make_span())
            await second.stop()
            assert sample_sum(render(registry), "pillion_tracing_spans_exported_total") == 2

    run(main())


def test_https_collector(run: Run, tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    svid = issue_svid(tmp_path / "ca", "spiffe://test/collector", tmp_path / "leaf", dns_names=["localhost"])
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(svid.cert, svid.key)
    client = ssl.create_default_context(cafile=str(svid.bundle))  # what https uses, with our CA

    async def main() -> None:
        async with FakeCollector(ssl=server) as collector:
            url = f"https://localhost:{collector.port}/v1/traces"
            async with exporting(url, interval=0.02, ssl_context=client) as exporter:
                exporter.submit(make_span())
                await collector.wait_for_spans(1)
            # The system trust store does not know our CA: refused, counted, not raised.
            async with exporting(url, interval=0.02) as untrusted:
                untrusted.submit(make_span())
                await until(lambda: failures(untrusted, "connect") == 1)
            assert len(collector.spans) == 1

    run(main())


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nok", False),  # close-delimited
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", False),
    ],
    ids=["content-length", "chunked", "close-delimited", "http/1.0"],
)
def test_poster_reads_every_framing(run: Run, answer: bytes, reused: bool) -> None:
    async def main() -> None:
        accepted = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    writer.write(answer)
                    await writer.drain()
                    if b"close" in answer or b"HTTP/1.0" in answer:
                        break
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        poster = HttpPoster(f"http://{HOST}:{port}/v1/traces", content_type="application/x-protobuf")
        try:
            for _ in range(2):
                assert await poster.post(b"x" * 100) == (200, b"ok")
        finally:
            poster.close()
            server.close()
            await server.wait_closed()
        assert accepted == (1 if reused else 2)

    run(main())


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="URL"):
        OtlpExporter("grpc://collector:4317", "a", Registry())
    with pytest.raises(ValueError, match="batch_size"):
        OtlpExporter("http://collector:4318/v1/traces", "a", Registry(), max_queue=0)


def test_collector_decodes_what_it_is_sent() -> None:
    from pillion.telemetry.otlp import encode, resource_for

    span = make_span(5, parent_span_id=b"1" * 16, kind=CLIENT, error=True)
    body, bad = encode([span], resource_for("b"))
    assert bad == 0
    (got,) = decode_spans(body)
    assert (got.trace_id, got.span_id, got.parent_span_id) == (
        span.trace_id.decode(),
        span.span_id.decode(),
        "1" * 16,
    )
    assert (got.kind, got.service_name, got.error, got.attributes["n"]) == ("CLIENT", "b", True, 5)
