"""Tracing through two real sidecars: client → A (outbound listener) → B (inbound listener) → app, both
exporting to a fake OTLP collector (real HTTP, real protobuf)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pillion.config import load_config_text
from pillion.runtime.runtime import Runtime
from pillion.testing.collector import FakeCollector
from pillion.testing.http import http_request
from pillion.testing.loops import Run
from pillion.testing.metrics import metric
from pillion.testing.sidecar import running_sidecar, sidecar_config
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"


def config(service: str, direction: str, endpoint: str, collector: str, sampling: float) -> str:
    doc: dict[str, Any] = {
        "service": service,
        "admin": {"address": f"{HOST}:0"},
        "tracing": {"otlp_endpoint": collector, "sampling": sampling},
        "listeners": [
            {
                "name": direction,
                "address": f"{HOST}:0",
                "direction": direction,
                "routes": [{"cluster": "next"}],
            }
        ],
        "clusters": [{"name": "next", "endpoints": [endpoint]}],
    }
    return json.dumps(doc)


@contextlib.asynccontextmanager
async def two_sidecars(
    sampling: float,
) -> AsyncIterator[tuple[FakeCollector, ScriptableUpstream, Runtime, Runtime]]:
    async with contextlib.AsyncExitStack() as stack:
        collector = await stack.enter_async_context(FakeCollector())
        app = await stack.enter_async_context(ScriptableUpstream())
        b = await stack.enter_async_context(
            running_sidecar(load_config_text(config("b", "inbound", app.address, collector.url, sampling)))
        )
        b_address = f"{HOST}:{b.listeners[0].port}"
        a = await stack.enter_async_context(
            running_sidecar(load_config_text(config("a", "outbound", b_address, collector.url, sampling)))
        )
        yield collector, app, a, b


def test_one_trace_across_two_sidecars(run: Run) -> None:
    async def main() -> None:
        async with two_sidecars(sampling=1.0) as (collector, app, a, _b):
            r = await http_request(
                HOST, a.listeners[0].port, "GET", "/orders?id=7", headers=[("host", "orders:80")]
            )
            assert r.status == 200
            spans = await collector.wait_for_spans(2)
            by_service = {s.service_name: s for s in spans}
            client, server = by_service["a"], by_service["b"]
            assert client.trace_id == server.trace_id
            assert server.parent_span_id == client.span_id  # B's span is a child of A's
            assert client.parent_span_id == ""  # the request came without a trace: A started one
            assert (client.kind, server.kind) == ("CLIENT", "SERVER")
            assert client.attributes["http.request.method"] == "GET"
            assert client.attributes["url.path"] == "/orders"
            assert client.attributes["http.response.status_code"] == 200
            assert client.attributes["server.address"] == "orders" and client.attributes["server.port"] == 80
            assert client.attributes["peer.service"] == "next"
            # The app gets a traceparent of that trace, whose parent is B's span.
            (seen,) = app.requests
            assert seen.header("traceparent") == f"00-{server.trace_id}-{server.span_id}-01"

    run(main())


def test_a_callers_trace_is_continued_and_its_decision_followed(run: Run) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    async def main() -> None:
        async with two_sidecars(sampling=0.0) as (collector, app, a, b):
            port = a.listeners[0].port
            sampled = f"00-{trace_id}-{parent}-01"
            await http_request(
                HOST, port, "GET", "/x", headers=[("traceparent", sampled), ("tracestate", "k=v")]
            )
            spans = await collector.wait_for_spans(2)
            assert {s.trace_id for s in spans} == {trace_id}
            client = next(s for s in spans if s.service_name == "a")
            assert client.parent_span_id == parent
            assert app.requests[0].header("tracestate") == "k=v"
            # Not sampled by the caller (and sampling 0 here): propagated, never recorded.
            unsampled = f"00-{trace_id}-{parent}-00"
            await http_request(HOST, port, "GET", "/y", headers=[("traceparent", unsampled)])
            header = app.requests[1].header("traceparent")
            assert header is not None and header.startswith(f"00-{trace_id}-") and header.endswith("-00")
            await http_request(HOST, port, "GET", "/z")  # no trace, sampling 0: a new trace, unsampled
            assert (
                app.requests[2].header(
                    "traceparent",
                )
                is not None
            )
            assert len(collector.spans) == 2
            assert metric(a, "pillion_tracing_spans_exported_total") == 1
            assert metric(b, "pillion_tracing_spans_exported_total") == 1

    run(main())


def test_a_collector_that_is_down_costs_requests_nothing(run: Run) -> None:
    async def main() -> None:
        async with two_sidecars(sampling=1.0) as (collector, app, a, _b):
            await collector.down()
            for i in range(20):
                assert (await http_request(HOST, a.listeners[0].port, "GET", f"/{i}")).status == 200
            assert len(app.requests) == 20

    run(main())


def test_the_access_log_names_the_trace_each_request_was_forwarded_with(tmp_path: Path, run: Run) -> None:
    """The log's trace id is the one in the traceparent the app received, for every kind of request:
    a new root that is sampled (a context is made), one that is not (only its line is), and a
    caller's trace, sampled or not. Sampling 0.5 over 64 requests makes roots of both kinds."""
    log_path = tmp_path / "access.log"
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            collector = await stack.enter_async_context(FakeCollector())
            app = await stack.enter_async_context(ScriptableUpstream())
            cfg = sidecar_config(
                [app.address],
                tracing={"otlp_endpoint": collector.url, "sampling": 0.5},
                access_log={"enabled": True, "path": str(log_path)},
            )
            rt = await stack.enter_async_context(running_sidecar(cfg))
            port = rt.listeners[0].port
            for i in range(64):
                assert (await http_request(HOST, port, "GET", f"/root/{i}")).status == 200
            for flags in ("01", "00"):
                headers = [("traceparent", f"00-{caller}-00f067aa0ba902b7-{flags}")]
                assert (
                    await http_request(HOST, port, "GET", f"/caller/{flags}", headers=headers)
                ).status == 200
            forwarded = {r.path: r.header("traceparent") or "" for r in app.requests}
            sampled = [p for p, tp in forwarded.items() if tp.endswith("-01")]
            spans = await collector.wait_for_spans(len(sampled))
            # Each sampled request made its span, in the trace the app was told of.
            assert sorted(s.trace_id for s in spans) == sorted(forwarded[p].split("-")[1] for p in sampled)
            roots = [tp for p, tp in forwarded.items() if p.startswith("/root/")]
            assert any(tp.endswith("-01") for tp in roots) and any(tp.endswith("-00") for tp in roots)

        # The runtime has shut down, which flushed the log.
        logged = {
            line["path"]: line["trace_id"] for line in map(json.loads, log_path.read_text().splitlines())
        }
        assert len(logged) == 66
        for path, traceparent in forwarded.items():
            assert logged[path] == traceparent.split("-")[1], path
        assert logged["/caller/01"] == logged["/caller/00"] == caller

    run(main())
