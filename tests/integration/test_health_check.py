"""Active health checks against real loopback servers: the scriptable upstream's `/healthz`, a closed port,
an upstream that never answers, and raw servers that answer badly.

Every test runs on both event loops and checks that no task outlives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from pillion.config.model import Duration, HealthCheck
from pillion.proxy.health_check import MAX_RESPONSE_HEAD, CheckedEndpoint, HealthChecker, HealthStats
from pillion.telemetry.prometheus import render
from pillion.telemetry.stats import Registry
from pillion.testing.loops import Run, until
from pillion.testing.ports import free_port
from pillion.testing.upstream import ScriptableUpstream

T = TypeVar("T")
HOST = "127.0.0.1"


@dataclass(eq=False)
class Endpoint:
    host: str
    port: int
    healthy: bool = True

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Cluster:
    """A real CheckedCluster: it records every transition with the counters as they were at that moment."""

    name: str
    endpoints: list[Endpoint]
    stats: HealthStats
    changes: list[tuple[str, bool, float, float]] = field(default_factory=list)

    def health_changed(self, endpoint: CheckedEndpoint) -> None:
        success, failure = checks(self.stats, self.name, endpoint.label)
        self.changes.append((endpoint.label, endpoint.healthy, success, failure))


def checks(stats: HealthStats, cluster: str, endpoint: str) -> tuple[float, float]:
    return (
        stats.checks.labels(cluster, endpoint, "success").value,
        stats.checks.labels(cluster, endpoint, "failure").value,
    )


def config(path: str | None = "/healthz", **overrides: Any) -> HealthCheck:
    values: dict[str, Any] = {
        "interval": Duration(0.05),
        "timeout": Duration(1.0),
        "healthy_threshold": 2,
        "unhealthy_threshold": 3,
        **overrides,
    }
    return HealthCheck(path=path, **values)


@asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[int]:
    """A server that reads a request head, writes `answer` and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def checking(cluster: Cluster, cfg: HealthCheck) -> AsyncIterator[HealthChecker]:
    checker = HealthChecker(cluster, cfg, cluster.stats, "orders")
    checker.start()
    try:
        yield checker
    finally:
        checker.stop()
        await checker.wait_closed()


def new_cluster(*endpoints: Endpoint, registry: Registry | None = None) -> Cluster:
    return Cluster("app", list(endpoints), HealthStats.declare(registry or Registry()))


# -- HTTP checks ---------------------------------------------------------------------------------


def test_endpoint_goes_unhealthy_after_threshold_failures_and_back_after_threshold_passes(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            endpoint = Endpoint(HOST, up.port)
            cluster = new_cluster(endpoint)
            gauge = cluster.stats.healthy.labels("app", endpoint.label)
            async with checking(cluster, config()):
                await until(lambda: checks(cluster.stats, "app", endpoint.label)[0] >= 3)
                assert endpoint.healthy and gauge.value == 1 and cluster.changes == []

                up.healthy = False
                await until(lambda: not endpoint.healthy)
                # The third failure in a row, and no earlier one, made it unhealthy.
                assert len(cluster.changes) == 1
                label, healthy, successes_then, failures_then = cluster.changes[0]
                assert (label, healthy, failures_then) == (endpoint.label, False, 3)
                assert gauge.value == 0

                up.healthy = True
                await until(lambda: endpoint.healthy)
                assert len(cluster.changes) == 2
                _, healthy, successes_now, _ = cluster.changes[1]
                assert healthy and successes_now - successes_then == 2
                assert gauge.value == 1

            healthz = [r for r in up.requests if r.path == "/healthz"]
            assert len(healthz) == len(up.requests) >= 8
            first = healthz[0]
            assert first.method == "GET" and first.version == "1.1"
            assert first.header("host") == endpoint.label
            assert first.header("user-agent") == "pillion-health-check"
            assert first.header("x-pillion-health-check") == "orders"
            assert first.header("connection") == "close"
            # A fresh connection per check.
            assert up.connections_accepted == len(up.requests)

    run(main())


def test_first_round_runs_at_start_and_rounds_keep_the_interval(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            cluster = new_cluster(Endpoint(HOST, up.port))
            started = time.monotonic()
            async with checking(cluster, config(interval=Duration(0.8))):
                await up.wait_for_requests(1, time_limit=1.0)
                first_after = time.monotonic() - started
                await up.wait_for_requests(2, time_limit=3.0)
                gap = up.requests[1].received_at - up.requests[0].received_at
            assert first_after < 0.6  # not a whole interval
            assert 0.78 <= gap < 1.6

    run(main())


def test_an_unhealthy_endpoint_becomes_healthy_after_healthy_threshold_passes(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            endpoint = Endpoint(HOST, up.port, healthy=False)
            cluster = new_cluster(endpoint)
            checker = HealthChecker(cluster, config(healthy_threshold=3), cluster.stats, "orders")
            for _ in range(2):
                await checker.check_once()
            assert not endpoint.healthy and cluster.changes == []
            assert cluster.stats.healthy.labels("app", endpoint.label).value == 0
            await checker.check_once()
            assert endpoint.healthy and cluster.changes == [(endpoint.label, True, 3, 0)]

    run(main())


def test_a_failure_breaks_a_run_of_passes_and_vice_versa(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            endpoint = Endpoint(HOST, up.port)
            cluster = new_cluster(endpoint)
            checker = HealthChecker(cluster, config(unhealthy_threshold=2), cluster.stats, "orders")
            for healthy in (False, True, False, True, False):
                up.healthy = healthy
                await checker.check_once()
            assert endpoint.healthy and cluster.changes == []
            await checker.check_once()  # the second failure in a row
            assert not endpoint.healthy

    run(main())


@pytest.mark.parametrize("status", [301, 404, 500])
def test_statuses_outside_2xx_fail(run: Run, status: int) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            endpoint = Endpoint(HOST, up.port)
            cluster = new_cluster(endpoint)
            checker = HealthChecker(
                cluster, config(f"/status/{status}", unhealthy_threshold=1), cluster.stats, "orders"
            )
            await checker.check_once()
            assert not endpoint.healthy
            assert checks(cluster.stats, "app", endpoint.label) == (0, 1)

    run(main())


def test_a_check_that_hangs_fails_at_the_timeout_and_endpoints_are_checked_concurrently(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as a, ScriptableUpstream() as b:
            endpoints = [Endpoint(HOST, a.port), Endpoint(HOST, b.port)]
            cluster = new_cluster(*endpoints)
            cfg = config("/delay/10", timeout=Duration(0.3), unhealthy_threshold=1)
            checker = HealthChecker(cluster, cfg, cluster.stats, "orders")
            started = time.monotonic()
            await checker.check_once()
            elapsed = time.monotonic() - started
            assert 0.29 <= elapsed < 0.6  # one timeout, not two
            assert [e.healthy for e in endpoints] == [False, False]
            assert [checks(cluster.stats, "app", e.label) for e in endpoints] == [(0, 1), (0, 1)]
            assert len(a.requests) == len(b.requests) == 1

    run(main())


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without a word
        b"hello\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200",  # no end of line before the close
        b"HTTP/1.1 200 " + b"x" * MAX_RESPONSE_HEAD + b"\r\n\r\n",  # a status line past the bound
    ],
    ids=["empty", "not-http", "bad-status", "unterminated", "too-long"],
)
def test_malformed_answers_fail(run: Run, answer: bytes) -> None:
    async def main() -> None:
        async with raw_server(answer) as port:
            endpoint = Endpoint(HOST, port)
            cluster = new_cluster(endpoint)
            checker = HealthChecker(cluster, config(unhealthy_threshold=1), cluster.stats, "orders")
            await checker.check_once()
            assert not endpoint.healthy
            assert checks(cluster.stats, "app", endpoint.label) == (0, 1)

    run(main())


def test_a_bare_status_line_from_an_http_1_0_server_passes(run: Run) -> None:
    async def main() -> None:
        async with raw_server(b"HTTP/1.0 204\n\n") as port:
            endpoint = Endpoint(HOST, port, healthy=False)
            cluster = new_cluster(endpoint)
            checker = HealthChecker(cluster, config(healthy_threshold=1), cluster.stats, "orders")
            await checker.check_once()
            assert endpoint.healthy

    run(main())


def test_a_path_cannot_split_the_request_line(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            cluster = new_cluster(Endpoint(HOST, up.port))
            checker = HealthChecker(cluster, config("/a b\r\nx: y"), cluster.stats, "svc\r\nz: 1")
            await checker.check_once()
            (request,) = up.requests
            assert request.target == "/a%20b%0D%0Ax:%20y"
            assert request.header("x") is None and request.header("z") is None
            assert request.header("x-pillion-health-check") == "svcz: 1"

    run(main())


# -- TCP checks ----------------------------------------------------------------------------------


def test_tcp_check_passes_on_connect_and_sends_nothing(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            endpoint = Endpoint(HOST, up.port, healthy=False)
            cluster = new_cluster(endpoint)
            checker = HealthChecker(cluster, config(None, healthy_threshold=1), cluster.stats, "orders")
            await checker.check_once()
            assert endpoint.healthy and checks(cluster.stats, "app", endpoint.label) == (1, 0)
            await until(lambda: up.connections_accepted == 1)
            assert up.requests == []

    run(main())


def test_tcp_check_against_a_closed_port_fails(run: Run) -> None:
    async def main() -> None:
        endpoint = Endpoint(HOST, free_port())
        cluster = new_cluster(endpoint)
        checker = HealthChecker(cluster, config(None, unhealthy_threshold=2), cluster.stats, "orders")
        await checker.check_once()
        assert endpoint.healthy and checks(cluster.stats, "app", endpoint.label) == (0, 1)
        await checker.check_once()
        assert not endpoint.healthy
        assert cluster.changes == [(endpoint.label, False, 0, 2)]

    run(main())


# -- the endpoint list, metrics, lifecycle -------------------------------------------------------


def test_endpoints_that_leave_the_cluster_lose_their_state_and_metrics(run: Run) -> None:
    async def main() -> None:
        registry = Registry()
        gone = Endpoint(HOST, free_port())
        async with ScriptableUpstream() as up:
            kept = Endpoint(HOST, up.port)
            cluster = new_cluster(kept, gone, registry=registry)
            checker = HealthChecker(cluster, config(unhealthy_threshold=1), cluster.stats, "orders")
            await checker.check_once()
            text = render(registry)
            assert f'pillion_endpoint_healthy{{cluster="app",endpoint="{gone.label}"}} 0' in text
            assert f'pillion_endpoint_healthy{{cluster="app",endpoint="{kept.label}"}} 1' in text
            assert (
                f'pillion_health_checks_total{{cluster="app",endpoint="{kept.label}",result="success"}} 1'
                in text
            )
            assert (
                f'pillion_health_checks_total{{cluster="app",endpoint="{gone.label}",result="failure"}} 1'
                in text
            )

            # DNS dropped one address and the cluster replaced the other's object (same label).
            replacement = Endpoint(HOST, up.port)
            cluster.endpoints = [replacement]
            up.healthy = False
            await checker.check_once()
            text = render(registry)
            assert gone.label not in text
            assert f'pillion_endpoint_healthy{{cluster="app",endpoint="{kept.label}"}} 0' in text
            assert not replacement.healthy
            assert [c[:2] for c in cluster.changes] == [(gone.label, False), (kept.label, False)]

    run(main())


def test_no_endpoints_is_a_quiet_round(run: Run) -> None:
    async def main() -> None:
        cluster = new_cluster()
        checker = HealthChecker(cluster, config(), cluster.stats, "orders")
        await checker.check_once()
        assert cluster.changes == []
        assert list(cluster.stats.checks.children()) == []

    run(main())


def test_stop_is_idempotent_and_cancels_probes_in_flight(run: Run) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            endpoint = Endpoint(HOST, up.port)
            cluster = new_cluster(endpoint)
            checker = HealthChecker(cluster, config("/delay/10", timeout=Duration(5.0)), cluster.stats, "x")
            checker.stop()  # before start: nothing to do
            checker.start()
            checker.start()  # a second start does not add a task
            await up.wait_for_requests(1)
            checker.stop()
            checker.stop()
            async with asyncio.timeout(1.0):
                await checker.wait_closed()
            assert endpoint.healthy
            assert checks(cluster.stats, "app", endpoint.label) == (0, 0)
            assert len(up.requests) == 1

            checker.start()  # a stopped checker starts again
            await up.wait_for_requests(2)
            checker.stop()
            await checker.wait_closed()

    run(main())


def test_a_failing_health_changed_does_not_stop_the_checks(run: Run) -> None:
    class Broken(Cluster):
        def health_changed(self, endpoint: CheckedEndpoint) -> None:
            super().health_changed(endpoint)
            raise RuntimeError("bug in the cluster")

    async def main() -> None:
        a, b = Endpoint(HOST, free_port()), Endpoint(HOST, free_port())
        cluster = Broken("app", [a, b], HealthStats.declare(Registry()))
        async with checking(cluster, config(None, unhealthy_threshold=1)):
            await until(lambda: checks(cluster.stats, "app", a.label)[1] >= 3)
        assert not a.healthy and not b.healthy
        assert len(cluster.changes) == 2

    run(main())
