"""Active health checks: a cluster's endpoints probed in the background, marked healthy or unhealthy.

Theory of operation: a `HealthChecker` owns one background task per cluster. Each round probes every
endpoint the cluster lists at that moment, concurrently, each probe bounded by `timeout`; rounds start
`interval` apart (sooner never, later only when a round outlasts the interval). A probe is a TCP connect
(`path` unset) or, on a fresh connection, `GET path` whose status line must be 2xx. An endpoint changes
state only after `unhealthy_threshold` failures or `healthy_threshold` passes in a row; then its `healthy`
flag is set and the cluster is told through `health_changed`, so the hot path reads a plain attribute and
never waits on a check.

Endpoints start healthy (Envoy starts them unhealthy until a first check passes). A sidecar sits in front
of an app that is usually already up, and starting unhealthy would fail the first requests with 503 for
up to an interval; so an endpoint is healthy until proven otherwise, and the first round runs as soon as
`start()` is called, so a dead endpoint is found within `unhealthy_threshold - 1` intervals plus a timeout.
The cluster creates its endpoints with `healthy = True`; the checker never forces the flag except on a
transition.

The endpoint list may change between rounds (DNS). Per-endpoint state (the runs of passes and failures,
metric children, the encoded request) is keyed by the endpoint's `label`, follows an endpoint that is
replaced by a new object with the same label, and is dropped with its metric children when the label is
gone. This module opens sockets, but it is off the data path: plain asyncio streams, a task per probe.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from pillion.config.model import HealthCheck
from pillion.runtime.tasks import Worker
from pillion.telemetry.stats import Counter, CounterFamily, Gauge, GaugeFamily, Registry

__all__ = ["MAX_RESPONSE_HEAD", "CheckedCluster", "CheckedEndpoint", "HealthChecker", "HealthStats"]

log = logging.getLogger("pillion.health")

# The status line must arrive within this many bytes; an answer that does not fit is a failure.
MAX_RESPONSE_HEAD = 8 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9][0-9])(?:[ \t][^\r\n]*)?\r?\n\Z")


class CheckedEndpoint(Protocol):
    """What the checker needs of an endpoint. `label` is unique within its cluster (`host:port`); the
    checker writes `healthy` only on a transition."""

    healthy: bool

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def label(self) -> str: ...


class CheckedCluster(Protocol):
    """What the checker needs of a cluster. `endpoints` is read afresh at every round."""

    @property
    def name(self) -> str: ...
    @property
    def endpoints(self) -> Sequence[CheckedEndpoint]: ...

    def health_changed(self, endpoint: CheckedEndpoint) -> None:
        """`endpoint.healthy` has just flipped; called once per transition."""


@dataclass(slots=True)
class HealthStats:
    checks: CounterFamily
    healthy: GaugeFamily

    @classmethod
    def declare(cls, registry: Registry) -> HealthStats:
        return cls(
            checks=registry.counter(
                "pillion_health_checks_total",
                "Active health checks of an endpoint, by result (success or failure).",
                ("cluster", "endpoint", "result"),
            ),
            healthy=registry.gauge(
                "pillion_endpoint_healthy",
                "1 while active health checks consider an endpoint healthy, else 0.",
                ("cluster", "endpoint"),
            ),
        )


class _State:
    """One endpoint's run of results, its metric children and its encoded probe request."""

    __slots__ = ("failure", "failures", "gauge", "passes", "request", "success")

    def __init__(self, success: Counter, failure: Counter, gauge: Gauge, request: bytes | None) -> None:
        self.passes = 0
        self.failures = 0
        self.success = success
        self.failure = failure
        self.gauge = gauge
        self.request = request


class HealthChecker:
    """Checks one cluster's endpoints until stopped. `start()` within a running loop; `stop()` anytime."""

    def __init__(
        self, cluster: CheckedCluster, config: HealthCheck, stats: HealthStats, service: str
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.stats = stats
        self.service = service
        self._service_header = "".join(c for c in service if c.isprintable())
        self._path = None if config.path is None else _safe_path(config.path)
        self._states: dict[str, _State] = {}
        self._worker = Worker(self._run, f"health check {cluster.name}")

    def start(self) -> None:
        """Run the first round now, then one every `interval`, in one background task."""
        self._worker.start()

    def stop(self) -> None:
        """Cancel the checks; idempotent. `await wait_closed()` to know the task has ended."""
        self._worker.stop()

    async def wait_closed(self) -> None:
        """Wait for the task `stop()` cancelled (probes in flight are cancelled with it)."""
        await self._worker.wait_closed()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(float(self.config.interval), 0.001)  # a zero interval must not spin the loop
        while True:
            started = loop.time()
            await self.check_once()
            await asyncio.sleep(max(0.0, started + interval - loop.time()))

    async def check_once(self) -> None:
        """One round: probe every endpoint listed now, concurrently; apply the results."""
        endpoints = list(self.cluster.endpoints)
        states = [self._state(endpoint) for endpoint in endpoints]
        results = await asyncio.gather(*(self._probe(e, s) for e, s in zip(endpoints, states, strict=True)))
        for endpoint, state, (passed, reason) in zip(endpoints, states, results, strict=True):
            self._record(endpoint, state, passed, reason)
        self._forget_except({endpoint.label for endpoint in endpoints})

    def _state(self, endpoint: CheckedEndpoint) -> _State:
        state = self._states.get(endpoint.label)
        if state is None:
            name, label = self.cluster.name, endpoint.label
            request = None
            if self._path is not None:
                request = (
                    f"GET {self._path} HTTP/1.1\r\nHost: {_authority(endpoint.host, endpoint.port)}\r\n"
                    f"User-Agent: pillion-health-check\r\nx-pillion-health-check: {self._service_header}\r\n"
                    "Connection: close\r\n\r\n"
                ).encode("latin-1", "replace")
            state = self._states[label] = _State(
                self.stats.checks.labels(name, label, "success"),
                self.stats.checks.labels(name, label, "failure"),
                self.stats.healthy.labels(name, label),
                request,
            )
        state.gauge.value = 1 if endpoint.healthy else 0
        return state

    def _forget_except(self, labels: set[str]) -> None:
        """Drop the state and metric children of endpoints the cluster no longer lists."""
        name = self.cluster.name
        for label in [label for label in self._states if label not in labels]:
            del self._states[label]
            self.stats.checks.remove(name, label, "success")
            self.stats.checks.remove(name, label, "failure")
            self.stats.healthy.remove(name, label)

    async def _probe(self, endpoint: CheckedEndpoint, state: _State) -> tuple[bool, str]:
        timeout = float(self.config.timeout)
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    endpoint.host, endpoint.port, limit=MAX_RESPONSE_HEAD
                )
                if state.request is None:
                    return True, "connected"
                writer.write(state.request)
                return _judge(await reader.readuntil(b"\n"))
        except TimeoutError:
            return False, f"no answer within {timeout:g}s"
        except asyncio.LimitOverrunError:
            return False, f"no status line in the first {MAX_RESPONSE_HEAD} bytes"
        except asyncio.IncompleteReadError:
            return False, "connection closed before a status line"
        except OSError as exc:
            return False, exc.strerror or repr(exc)
        except Exception as exc:  # a check must never end the checker
            return False, repr(exc)
        finally:
            if writer is not None:
                writer.close()

    def _record(self, endpoint: CheckedEndpoint, state: _State, passed: bool, reason: str) -> None:
        config = self.config
        if passed:
            state.success.value += 1
            state.failures = 0
            state.passes += 1
            flip = not endpoint.healthy and state.passes >= config.healthy_threshold
        else:
            state.failure.value += 1
            state.passes = 0
            state.failures += 1
            flip = endpoint.healthy and state.failures >= config.unhealthy_threshold
        if not flip:
            return
        endpoint.healthy = passed
        state.gauge.value = 1 if passed else 0
        extra = {"cluster": self.cluster.name, "endpoint": endpoint.label}
        if passed:
            log.info("endpoint healthy", extra={**extra, "passes": state.passes})
        else:
            log.warning("endpoint unhealthy", extra={**extra, "failures": state.failures, "reason": reason})
        try:
            self.cluster.health_changed(endpoint)
        except Exception:  # the cluster's bug must not stop the checks of every other endpoint
            log.exception("health_changed failed", extra=extra)


def _judge(status_line: bytes) -> tuple[bool, str]:
    match = _STATUS_LINE.match(status_line)
    if match is None:
        return False, "malformed status line"
    status = int(match.group(1))
    return 200 <= status < 300, f"status {status}"


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _safe_path(path: str) -> str:
    """The path as a request target: spaces, controls and non-ASCII percent-encoded, so a config value
    can never split the request line or inject a header."""
    encoded = "".join(c if "!" <= c <= "~" else quote(c, safe="") for c in path)
    return encoded if encoded.startswith("/") else "/" + encoded
