"""Every metric the proxy updates, declared once.

Families are declared here; components ask for their labelled children once (at config time) and keep
them, so the per-request cost is an attribute increment, never a label lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pillion.telemetry.stats import Counter, CounterFamily, GaugeFamily, HistogramFamily, Registry

# Body sizes from empty to 64 MiB in powers of 4: 0, 256 B, 1 KiB, 4 KiB ... 64 MiB.
SIZE_BUCKETS: tuple[float, ...] = (0.0, *(float(256 * 4**i) for i in range(10)))

if TYPE_CHECKING:
    from pillion.filters.authz import AuthzStats
    from pillion.filters.fault import FaultStats
    from pillion.filters.rate_limit import RateLimitStats


@dataclass(slots=True)
class ProxyStats:
    requests: CounterFamily
    duration: HistogramFamily
    request_size: HistogramFamily
    response_size: HistogramFamily
    local_replies: CounterFamily
    downstream_active: GaugeFamily
    downstream_total: CounterFamily
    downstream_rejected: CounterFamily
    downstream_timeouts: CounterFamily
    tls_failures: CounterFamily
    mux_connections: GaugeFamily
    upstream_active: GaugeFamily
    upstream_total: CounterFamily
    connect_failures: CounterFamily
    upstream_timeouts: CounterFamily
    upstream_resets: CounterFamily
    access_log_errors: Counter
    endpoint_requests: CounterFamily
    ejections: CounterFamily
    ejected: GaugeFamily
    overflows: CounterFamily
    retries: CounterFamily
    retries_refused: CounterFamily
    registry: Registry
    # A filter's metrics are declared with the filter module, on first use: an unused filter costs
    # neither the import nor the series.
    _rate_limit: RateLimitStats | None = None
    _fault: FaultStats | None = None
    _authz: AuthzStats | None = None

    def rate_limit(self) -> RateLimitStats:
        if self._rate_limit is None:
            from pillion.filters.rate_limit import RateLimitStats

            self._rate_limit = RateLimitStats.declare(self.registry)
        return self._rate_limit

    def fault(self) -> FaultStats:
        if self._fault is None:
            from pillion.filters.fault import FaultStats

            self._fault = FaultStats.declare(self.registry)
        return self._fault

    def authz(self) -> AuthzStats:
        if self._authz is None:
            from pillion.filters.authz import AuthzStats

            self._authz = AuthzStats.declare(self.registry)
        return self._authz

    def route_fields(self, labels: tuple[str, str, str]) -> dict[str, Any]:
        """The metric fields of a `RouteStats` (or `RouteEntry`) for (listener, route, cluster): the
        children its requests update, resolved once."""
        return {
            "duration": self.duration.labels(*labels),
            "request_size": self.request_size.labels(*labels),
            "response_size": self.response_size.labels(*labels),
            "requests": self.requests,
            "labels": labels,
            "by_code": {},
        }

    @classmethod
    def declare(cls, registry: Registry) -> ProxyStats:
        route = ("listener", "route", "cluster")
        return cls(
            requests=registry.counter(
                "pillion_http_requests_total",
                "Requests answered, by route and status code.",
                (*route, "code"),
            ),
            duration=registry.histogram(
                "pillion_http_request_duration_seconds",
                "Time from the first byte of a request to the last byte of its response.",
                route,
            ),
            request_size=registry.histogram(
                "pillion_http_request_body_size_bytes",
                "Request body sizes, as received from the client (0 for a request without a body).",
                route,
                SIZE_BUCKETS,
            ),
            response_size=registry.histogram(
                "pillion_http_response_body_size_bytes",
                "Response body sizes, as sent to the client (0 for a response without a body).",
                route,
                SIZE_BUCKETS,
            ),
            local_replies=registry.counter(
                "pillion_local_replies_total",
                "Responses Pillion generated itself, by reason (x-pillion-error).",
                ("listener", "reason"),
            ),
            downstream_active=registry.gauge(
                "pillion_downstream_connections_active", "Client connections open now.", ("listener",)
            ),
            downstream_total=registry.counter(
                "pillion_downstream_connections_total", "Client connections accepted.", ("listener",)
            ),
            downstream_rejected=registry.counter(
                "pillion_downstream_connections_rejected_total",
                "Client connections closed on accept because the listener was at max_connections.",
                ("listener",),
            ),
            downstream_timeouts=registry.counter(
                "pillion_downstream_timeouts_total",
                "Client connections closed for being too slow: `request_headers` (a head not complete in "
                "time: slowloris), `request` (a whole request), `idle` (keep-alive with nothing to do).",
                ("listener", "timeout"),
            ),
            tls_failures=registry.counter(
                "pillion_tls_handshake_failures_total",
                "TLS connections refused: a failed handshake, or a peer certificate that breaks the SPIFFE "
                "rules or is not the expected identity; from clients of `listener`, or to endpoints of "
                "`cluster` (the other label is empty).",
                ("listener", "cluster"),
            ),
            mux_connections=registry.gauge(
                "pillion_tls_multiplexed_connections",
                "mTLS connections between sidecars open now that carry HTTP connections as streams "
                "(`pillion-mux/1`): from clients of `listener`, or to endpoints of `cluster` (the other "
                "label is empty).",
                ("listener", "cluster"),
            ),
            upstream_active=registry.gauge(
                "pillion_upstream_connections_active", "Connections to endpoints open now.", ("cluster",)
            ),
            upstream_total=registry.counter(
                "pillion_upstream_connections_total", "Connections to endpoints opened.", ("cluster",)
            ),
            connect_failures=registry.counter(
                "pillion_upstream_connect_failures_total",
                "Failed attempts to connect to an endpoint (refused, unreachable or timed out).",
                ("cluster", "endpoint"),
            ),
            upstream_timeouts=registry.counter(
                "pillion_upstream_timeouts_total", "Requests that hit the route timeout.", ("cluster",)
            ),
            upstream_resets=registry.counter(
                "pillion_upstream_resets_total",
                "Upstream connections that closed or failed in the middle of a response.",
                ("cluster",),
            ),
            access_log_errors=registry.counter(
                "pillion_access_log_write_errors_total", "Access-log writes that failed."
            ).labels(),
            endpoint_requests=registry.counter(
                "pillion_upstream_responses_total",
                "Response heads received from each endpoint (every try), by status class.",
                ("cluster", "endpoint", "code_class"),
            ),
            ejections=registry.counter(
                "pillion_outlier_ejections_total",
                "Times outlier detection ejected an endpoint.",
                ("cluster", "endpoint"),
            ),
            ejected=registry.gauge(
                "pillion_endpoint_ejected",
                "1 while outlier detection has the endpoint ejected.",
                ("cluster", "endpoint"),
            ),
            overflows=registry.counter(
                "pillion_upstream_overflows_total",
                "Requests failed fast by a circuit-breaker limit (connections, pending, requests, retries).",
                ("cluster", "limit"),
            ),
            retries=registry.counter(
                "pillion_upstream_retries_total", "Tries sent again after a failed try.", ("cluster",)
            ),
            retries_refused=registry.counter(
                "pillion_upstream_retries_refused_total",
                "Retries wanted but not made: attempts used up, the retry budget spent, or not replayable.",
                ("cluster", "why"),
            ),
            registry=registry,
        )
