"""Metrics merging (`metrics.merge_app`) over real loopback sockets: a real sidecar scrapes a real app.

The app is a small `HttpServer` answering every request with one fixed response, or a bare asyncio server
that reads the request and never answers. The sidecar's `/metrics` is fetched through its admin server,
as Prometheus would, and the merged text goes through `promtool check metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from pillion.config import ConfigError, load_config_text
from pillion.runtime.metrics_merge import MAX_BODY, app_part
from pillion.runtime.runtime import Runtime
from pillion.telemetry.prometheus import CONTENT_TYPE
from pillion.testing.http import Response, http_request
from pillion.testing.loops import Run
from pillion.testing.metrics import sample_sum
from pillion.testing.ports import free_port
from pillion.testing.server import HttpServer, ServerRequest, ServerResponse
from pillion.testing.sidecar import running_sidecar, sidecar_config
from pillion.testing.tools import assert_promtool_clean
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"
FAILURES = "pillion_metrics_merge_failures_total"
APP_METRICS = """\
# HELP app_orders_total Orders placed.
# TYPE app_orders_total counter
app_orders_total{state="paid"} 42
app_orders_total{state="refunded"} 3
# HELP app_queue_length Orders waiting to be packed.
# TYPE app_queue_length gauge
app_queue_length 7
"""
# The app's own `pillion_*` families, which would clash with the sidecar's.
CLASHING = """\
# HELP pillion_http_requests_total The app's own idea of this name.
# TYPE pillion_http_requests_total counter
pillion_http_requests_total{code="200"} 999
# HELP pillion_app_latency_seconds An app histogram under Pillion's prefix.
# TYPE pillion_app_latency_seconds histogram
pillion_app_latency_seconds_bucket{le="0.1"} 5
pillion_app_latency_seconds_bucket{le="+Inf"} 6
pillion_app_latency_seconds_sum 0.9
pillion_app_latency_seconds_count 6
"""


class MetricsApp(HttpServer):
    """The app: every request gets the same status, content type and body, framed with content-length,
    chunked (in two chunks) or by closing the connection."""

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        content_type: str = CONTENT_TYPE,
        port: int = 0,
        framing: str = "length",
    ) -> None:
        super().__init__(HOST, port)
        self.body, self.status, self.content_type, self.framing = body, status, content_type, framing
        self.seen: list[tuple[str, str | None]] = []  # (path, accept header) per request

    async def handle(self, request: ServerRequest, response: ServerResponse) -> None:
        self.seen.append((request.path, request.header("accept")))
        await request.discard()
        if self.framing == "length":
            await response.send(self.status, self.body, content_type=self.content_type)
            return
        chunked = [("transfer-encoding", "chunked")] if self.framing == "chunked" else []
        await response.start(self.status, [("content-type", self.content_type), *chunked])
        half = len(self.body) // 2
        await response.write(self.body[:half])
        await response.write(self.body[half:])
        await response.end()


@asynccontextmanager
async def silent_app() -> AsyncIterator[int]:
    """An app that accepts and reads, but never answers; yields its port."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until the sidecar gives up and closes
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(hold, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def merge_config(endpoint: str, **merge: Any) -> Any:
    return sidecar_config([endpoint], metrics={"merge_app": {"cluster": "app", **merge}})


async def scrape(rt: Runtime) -> Response:
    reply = await http_request(HOST, rt.admin.port, "GET", "/metrics")
    assert reply.status == 200, reply
    assert reply.header("content-type") == CONTENT_TYPE
    return reply


def type_lines(text: str, name: str) -> int:
    return sum(line.startswith(f"# TYPE {name} ") for line in text.splitlines())


# -- merging --------------------------------------------------------------------------------------


def test_scrape_serves_pillion_then_the_app_and_passes_promtool(run: Run, tmp_path: Path) -> None:
    async def main() -> str:
        async with MetricsApp(APP_METRICS.encode()) as app, running_sidecar(merge_config(app.address)) as rt:
            proxied = await http_request(HOST, rt.listeners[0].port, "GET", "/orders")
            assert proxied.status == 200
            text = (await scrape(rt)).text
            # The app was asked at its metrics path, for the text format Pillion serves.
            assert app.seen[-1][0] == "/metrics"
            assert "text/plain;version=0.0.4" in (app.seen[-1][1] or "")
            assert sample_sum(text, FAILURES) == 0
            return text

    text = run(main())
    assert sample_sum(text, "pillion_http_requests_total") == 1
    assert sample_sum(text, "app_orders_total", state="paid") == 42
    assert sample_sum(text, "app_queue_length") == 7
    assert text.endswith(APP_METRICS)  # the app's part comes last, as the app wrote it
    assert text.index("# TYPE pillion_http_requests_total ") < text.index("# TYPE app_orders_total ")
    assert_promtool_clean(text, tmp_path)


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_any_body_framing_is_read(run: Run, framing: str) -> None:
    async def main() -> str:
        async with (
            MetricsApp(APP_METRICS.encode(), framing=framing) as app,
            running_sidecar(merge_config(app.address)) as rt,
        ):
            return (await scrape(rt)).text

    text = run(main())
    assert text.endswith(APP_METRICS)
    assert sample_sum(text, FAILURES) == 0


def test_app_families_named_pillion_are_dropped(run: Run, tmp_path: Path) -> None:
    async def main() -> str:
        body = (CLASHING + APP_METRICS).encode()
        async with MetricsApp(body) as app, running_sidecar(merge_config(app.address)) as rt:
            return (await scrape(rt)).text

    text = run(main())
    assert type_lines(text, "pillion_http_requests_total") == 1
    # (Pillion's own series may hold any number, 999 included: look for the app's line itself.)
    assert 'pillion_http_requests_total{code="200"} 999\n' not in text
    assert "pillion_app_latency_seconds" not in text
    assert sample_sum(text, "app_orders_total") == 45
    assert_promtool_clean(text, tmp_path)


def test_openmetrics_eof_is_stripped_and_a_newline_added(run: Run, tmp_path: Path) -> None:
    async def main() -> str:
        body = (APP_METRICS + "# EOF").encode()  # OpenMetrics, without a final newline
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
        async with (
            MetricsApp(body, content_type=content_type) as app,
            running_sidecar(merge_config(app.address)) as rt,
        ):
            return (await scrape(rt)).text

    text = run(main())
    assert text.endswith(APP_METRICS)
    assert "# EOF" not in text
    assert_promtool_clean(text, tmp_path)


def test_app_part_keeps_everything_else_as_written() -> None:
    app = 'x_total{a="\u2028"} 1\r\n# a free comment\n\napp_up 1\n# EOF\n\n'
    assert app_part(app) == 'x_total{a="\u2028"} 1\r\n# a free comment\n\napp_up 1\n'
    assert app_part("") == ""
    assert app_part("app_up 1") == "app_up 1\n"
    assert app_part('pillion_up 1\n  pillion_x{a="b"} 2\n# UNIT pillion_y seconds\n') == ""


# -- failures: Pillion's metrics alone, counted -------------------------------------------------------


def test_app_down_counts_connect_logs_once_and_recovers(run: Run, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pillion.metrics")
    port = free_port()

    def merge_logs() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "pillion.metrics"]

    async def main() -> None:
        async with running_sidecar(merge_config(f"{HOST}:{port}")) as rt:
            first = (await scrape(rt)).text
            assert "# TYPE pillion_http_requests_total counter" in first
            assert sample_sum(first, FAILURES, reason="connect") == 1  # counted in the scrape that lacks it
            second = (await scrape(rt)).text
            assert sample_sum(second, FAILURES, reason="connect") == 2
            assert [r.levelname for r in merge_logs()] == ["WARNING"]  # once per streak
            assert merge_logs()[0].__dict__["reason"] == "connect"
            async with MetricsApp(APP_METRICS.encode(), port=port):  # the app comes up
                third = (await scrape(rt)).text
            assert sample_sum(third, "app_orders_total") == 45
            assert sample_sum(third, FAILURES, reason="connect") == 2
            assert [r.levelname for r in merge_logs()] == ["WARNING", "INFO"]

    run(main())


@pytest.mark.parametrize(
    ("app_args", "reason"),
    [
        ({"body": b"oops\n", "status": 500}, "status"),
        ({"body": b"x" * (MAX_BODY + 1)}, "too_large"),
        ({"body": b'{"orders": 42}', "content_type": "application/json"}, "invalid"),
        ({"body": b"app_up \xff\n"}, "invalid"),
    ],
    ids=["status", "too_large", "not_text", "not_utf8"],
)
def test_unusable_answer_is_counted(run: Run, app_args: dict[str, Any], reason: str) -> None:
    async def main() -> str:
        async with MetricsApp(**app_args) as app, running_sidecar(merge_config(app.address)) as rt:
            return (await scrape(rt)).text

    text = run(main())
    assert sample_sum(text, FAILURES, reason=reason) == 1
    assert sample_sum(text, FAILURES) == 1
    assert "# TYPE pillion_http_requests_total counter" in text
    assert "xxxxxxxx" not in text and "oops" not in text and "orders" not in text and "app_up" not in text


@pytest.mark.parametrize("behaviour", ["/close-after-head", "/reset"])
def test_cut_off_answer_is_invalid(run: Run, behaviour: str) -> None:
    """A body cut short by FIN (10 of 100 promised bytes), or a reset instead of an answer."""

    async def main() -> str:
        async with ScriptableUpstream() as up, running_sidecar(merge_config(up.address)) as rt:
            up.override = behaviour
            return (await scrape(rt)).text

    text = run(main())
    assert sample_sum(text, FAILURES, reason="invalid") == 1
    assert sample_sum(text, FAILURES) == 1


def test_app_that_never_answers_times_out(run: Run) -> None:
    async def main() -> tuple[str, float]:
        async with (
            silent_app() as port,
            running_sidecar(merge_config(f"{HOST}:{port}", timeout="200ms")) as rt,
        ):
            started = time.monotonic()
            text = (await scrape(rt)).text
            return text, time.monotonic() - started

    text, took = run(main())
    assert sample_sum(text, FAILURES, reason="timeout") == 1
    assert 0.2 <= took < 1.0, took
    assert "# TYPE pillion_http_requests_total counter" in text


# -- the ready check shares the app client ----------------------------------------------------------


def test_ready_check_still_asks_the_app(run: Run) -> None:
    async def main() -> None:
        async with MetricsApp(b"ok\n") as app:
            check = {"ready_check": {"cluster": "app", "path": "/healthz", "timeout": "200ms"}}
            admin = {"address": f"{HOST}:0", **check}
            async with running_sidecar(sidecar_config([app.address], admin=admin)) as rt:
                assert await rt.readiness() == (True, "ready")
                app.status = 503
                assert await rt.readiness() == (False, "app not ready: app answered 503")
                assert app.seen[-1][0] == "/healthz"
        port = free_port()
        admin = {"address": f"{HOST}:0", "ready_check": {"cluster": "app"}}
        async with running_sidecar(sidecar_config([f"{HOST}:{port}"], admin=admin)) as rt:
            ready, reason = await rt.readiness()
            assert not ready and reason.startswith(f"app not ready: cannot reach {HOST}:{port}"), reason

    run(main())


# -- configuration -------------------------------------------------------------------------------------


def test_unknown_cluster_is_an_error_naming_the_path() -> None:
    text = (
        "service: s\nmetrics: {merge_app: {cluster: nope}}\n"
        'clusters: [{name: app, endpoints: ["127.0.0.1:1"]}]'
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env={})
    assert caught.value.errors == ["metrics.merge_app.cluster: unknown cluster 'nope'"]


def test_path_and_timeout_are_checked_too() -> None:
    text = (
        "service: s\nmetrics: {merge_app: {cluster: app, path: metrics, timeout: 0s}}\n"
        'clusters: [{name: app, endpoints: ["127.0.0.1:1"]}]'
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, env={})
    assert caught.value.errors == [
        "metrics.merge_app.path: must start with '/', got 'metrics'",
        "metrics.merge_app.timeout: must be greater than 0",
    ]


def test_merge_code_is_imported_only_when_configured() -> None:
    code = """
import sys
from pillion.testing.sidecar import sidecar_config
from pillion.runtime.runtime import Runtime
rt = Runtime(sidecar_config(["127.0.0.1:1"]))
assert "pillion.runtime.metrics_merge" not in sys.modules, "imported without merge_app"
assert rt.merger is None and rt.registry.get("pillion_metrics_merge_failures_total") is None
rt = Runtime(sidecar_config(["127.0.0.1:1"], metrics={"merge_app": {"cluster": "app"}}))
assert rt.merger is not None and rt.registry.get("pillion_metrics_merge_failures_total") is not None
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
