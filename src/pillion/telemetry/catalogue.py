"""docs/metrics.md, rendered from the code: `python -m pillion.telemetry.catalogue > docs/metrics.md`.

Theory of operation: metric families are declared in code (proxy/stats.py, the filters, the cluster
helpers, TLS, overload, process), several of them only when the feature that updates them is configured.
So the catalogue builds a real `Runtime` -- not started: nothing binds, resolves or spawns -- from a
configuration that turns every optional feature on (`FULL_CONFIG`: a TCP listener, health checks, a DNS
name, rate limit, fault, authorization, retries, outlier detection, overload, tracing, metrics merging,
an mTLS identity, whose certificate files are issued into a temporary directory), forces the few
families that are declared only when a cluster starts (DNS, health checks), and reads every family back
from the registry: name, type, help, label names. Building a second, minimal Runtime tells which
families exist whatever the config.

The families are grouped by area (`AREAS`, by name prefix) and each label name is explained once
(`LABELS`, with what bounds its values). A family or label the tables do not know lands under "Other" or
"undocumented" rather than failing the generator; tests/unit/test_metrics_docs.py fails on both, and on
a committed docs/metrics.md that differs from this rendering, so the catalogue cannot go stale.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pillion.http.local_reply import REASONS
from pillion.telemetry.prometheus import format_value
from pillion.telemetry.stats import AnyFamily, HistogramFamily, Registry

__all__ = ["AREAS", "FULL_CONFIG", "LABELS", "MetricInfo", "catalogue", "full_registry", "render"]

# Every optional feature on. `{dir}` is the directory holding the identity's certificate files.
FULL_CONFIG = """\
service: catalogue
admin: {{address: "127.0.0.1:0"}}
identity: {{cert: "{dir}/cert.pem", key: "{dir}/key.pem", trust_bundle: "{dir}/bundle.pem"}}
overload: {{max_connections: 10000, max_memory: 1GiB}}
tracing: {{otlp_endpoint: "http://127.0.0.1:4318/v1/traces"}}
metrics: {{merge_app: {{cluster: app}}}}
listeners:
  - name: inbound
    address: "127.0.0.1:0"
    tls: {{mode: strict}}
    authorization: {{default: allow}}
    routes:
      - match: {{prefix: /}}
        cluster: app
        retries: {{attempts: 2}}
        rate_limit: {{requests_per_second: 100}}
        fault: {{delay: {{percent: 1, duration: 1ms}}, abort: {{percent: 1}}}}
  - name: db
    address: "127.0.0.1:0"
    protocol: tcp
    cluster: db
clusters:
  - name: app
    endpoints: ["127.0.0.1:8080"]
    outlier_detection: {{consecutive_5xx: 5}}
    health_check: {{path: /healthz}}
    tls: {{mode: mesh}}
  - name: db
    endpoints: ["db.example.internal:5432"]
"""

MINIMAL_CONFIG = 'service: minimal\nadmin: {address: "127.0.0.1:0"}\n'

# (title, what the area covers, name prefixes), in the order the document presents them.
AREAS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "Process",
        "The process as a whole; the `process_*` ones are named like the Prometheus client libraries'.",
        ("pillion_process_", "pillion_build_info", "pillion_event_loop_"),
    ),
    (
        "HTTP requests and client connections",
        "What clients of the HTTP listeners asked and got; the `pillion_http_*` pair is the one to "
        "alert on (request rate, errors by `code`, latency).",
        ("pillion_http_", "pillion_local_replies_", "pillion_downstream_", "pillion_access_log_"),
    ),
    (
        "Upstream clusters and endpoints",
        "Connections and tries to the endpoints of each cluster, and the machinery that picks them: "
        "circuit breakers, retries, outlier detection, active health checks, DNS.",
        ("pillion_upstream_", "pillion_outlier_", "pillion_endpoint_", "pillion_health_", "pillion_dns_"),
    ),
    (
        "Route policies",
        "Requests refused or altered by a route's rate limit, fault injection or authorization.",
        ("pillion_rate_limited_", "pillion_fault_", "pillion_authz_"),
    ),
    ("TCP proxying", "Connections of `protocol: tcp` listeners.", ("pillion_tcp_",)),
    ("TLS and identity", "Handshakes and the workload certificate.", ("pillion_tls_",)),
    ("Overload", "Load shed to stay within the process-wide limits (`overload`).", ("pillion_overload_",)),
    ("Tracing", "Spans sent to the OTLP collector, and those dropped.", ("pillion_tracing_",)),
    (
        "Metrics merging",
        "Scrapes that could not include the app's own metrics (`metrics.merge_app`).",
        ("pillion_metrics_",),
    ),
    ("Configuration", "Reloads (SIGHUP, `watch`).", ("pillion_config_",)),
)

# Every label name: what its values are, and what bounds how many there can be.
LABELS: dict[str, str] = {
    "listener": "A listener's `name` from the config. Bounded by the config.",
    "route": "A route's `name` (`route<N>` by default); empty for requests no route matched. Bounded by "
    "the config.",
    "cluster": "A cluster's `name` from the config; empty where none applies (a redirect or direct "
    "response route; the listener side of a TLS failure). Bounded by the config.",
    "code": "The response's status code, as sent. Bounded by the codes the app and Pillion actually send "
    "(a few dozen at most in practice; 100-999 in theory).",
    "code_class": "`0xx` to `5xx`: the first digit of an upstream's status code. Six values.",
    "endpoint": "An endpoint's `host:port`. Bounded by the cluster's endpoints; for a DNS name, by the "
    "addresses it resolves to now: the series of an address DNS stops returning are removed with it.",
    "reason": f"A local-reply reason (`x-pillion-error`, docs/proxy.md): one of {len(REASONS)} fixed values "
    "plus `fault_injected`. On tracing metrics: why spans were dropped (`queue_full`, `export_failed`, "
    "`rejected`, `invalid`, `shutdown`) or an export failed (`connect`, `timeout`, `connection`, `status`, "
    "`error`). On metrics merging: why the app's metrics were left out (`connect`, `timeout`, `status`, "
    "`too_large`, `invalid`).",
    "timeout": "`request_headers`, `request` or `idle`.",
    "limit": "The circuit-breaker limit hit: `connections`, `pending`, `requests` or `retries`.",
    "why": "Why a retry was not made: `attempts`, `budget`, `body_not_kept`, `not_idempotent` or `overflow`.",
    "result": "`success` or `failure` (health checks); `ok` or `failed` (identity reloads).",
    "action": "`connection` or `request`.",
    "resource": "`memory`.",
    "cert": "`identity`: the workload certificate.",
    "version": "Pillion's version: one value per process.",
}

OTHER_AREA = "Other"
UNDOCUMENTED = "(undocumented)"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]  # histograms only
    always: bool  # declared whatever the config (False: only when its feature is configured)


def area_of(name: str) -> str:
    for title, _, prefixes in AREAS:
        if name.startswith(prefixes):
            return title
    return OTHER_AREA


def _families(registry: Registry) -> Iterable[AnyFamily]:
    # collect() runs the scrape-time collectors too; harmless on a Runtime that never started.
    return registry.collect()


def full_registry() -> Registry:
    from pillion.config import load_config_text
    from pillion.runtime.runtime import Runtime
    from pillion.tls.ca import init_ca, issue_svid

    with tempfile.TemporaryDirectory(prefix="pillion-catalogue-") as tmp:
        init_ca(Path(tmp) / "ca")
        issue_svid(Path(tmp) / "ca", "spiffe://catalogue.example/ns/default/sa/catalogue", tmp)
        # The identity's files are read when the Runtime is built, so the directory may go after.
        runtime = Runtime(load_config_text(FULL_CONFIG.format(dir=tmp), env={}))
    # Declared when a cluster starts (its DNS refresher, its health checker): declared here instead.
    runtime._stats_of("dns")
    runtime._stats_of("health")
    # The route policies are declared as the routes compile; asked for again in case a route did not.
    runtime.stats.rate_limit()
    runtime.stats.fault()
    runtime.stats.authz()
    return runtime.registry


def minimal_registry() -> Registry:
    from pillion.config import load_config_text
    from pillion.runtime.runtime import Runtime

    return Runtime(load_config_text(MINIMAL_CONFIG, env={})).registry


def catalogue() -> list[MetricInfo]:
    """Every family a Runtime can declare, in declaration order."""
    always = {f.name for f in _families(minimal_registry())}
    return [
        MetricInfo(
            name=f.name,
            kind=f.kind,
            help=f.help,
            labels=f.label_names,
            buckets=f.bounds if isinstance(f, HistogramFamily) else (),
            always=f.name in always,
        )
        for f in _families(full_registry())
    ]


INTRO = """\
# Metrics reference

<!-- Generated from the code; regenerate with
     `python -m pillion.telemetry.catalogue > docs/metrics.md`. Do not edit by hand. -->

The admin server serves every metric at `GET /metrics` (admin `address`, `127.0.0.1:9901` by default)
in the Prometheus text format 0.0.4; the output passes `promtool check metrics` without a warning. A
scrape job needs nothing special:

```yaml
scrape_configs:
  - job_name: pillion
    static_configs: [{targets: ["127.0.0.1:9901"]}]
```

## Conventions

- Every name starts with `pillion_`, so Pillion's series never collide with the app's.
- Values are in base units: seconds (`_seconds`) and bytes (`_bytes`), never milliseconds or
  kilobytes; a ratio would be 0-1.
- Counters, and only counters, end in `_total`; they start at 0 and only go up (a restart resets
  them: use `rate()` and `increase()`).
- Histograms have cumulative `_bucket{le="..."}` series ending in `le="+Inf"`, plus `_sum` and
  `_count`. Their buckets are listed below.
- Names are checked when declared (syntax, prefix, units, `_total`), so a badly named metric stops
  Pillion at startup rather than producing a scrape that lints with warnings.
- An unlabelled metric is exported from the start (as 0); a labelled one shows its `# HELP` and
  `# TYPE` lines from the start and a series once its labels have occurred (e.g. the first 503).
- Metrics marked *(when configured)* exist only when the feature that updates them is in the
  configuration: a TCP listener, a health check, a DNS name among the endpoints, a route rate limit,
  fault or authorization, an identity, metrics merging.
- Every label has a bounded set of values (see [Labels](#labels)): none is a path, a client address,
  a header value or an id, so the number of series depends on the configuration, not on the traffic.

## Merging the app's metrics

With `metrics.merge_app` set, a scrape of the sidecar's `/metrics` also returns the app's own metrics,
so one scrape target serves both (Istio's metrics merging). At each scrape Pillion GETs `path` from
the app -- the first endpoint of `cluster` -- over a fresh plain HTTP/1.1 connection, asking for the
text format, and serves its own metrics followed by the app's:

```yaml
metrics:
  merge_app: {cluster: app, path: /metrics, timeout: 1s}   # path and timeout: these defaults
```

The app's text is passed on as written, except that any family whose name starts with `pillion_` is
dropped (it would clash with Pillion's) and a closing OpenMetrics `# EOF` line is removed. Only a 200
answer with a text content type is merged, and it must arrive within `timeout` and be at most 8 MiB.
Otherwise -- the app refuses the connection, is slow, answers another status, sends too much or
something that is not text -- the scrape still answers 200 with Pillion's metrics alone, and
`pillion_metrics_merge_failures_total{reason}` counts it (`connect`, `timeout`, `status`, `too_large`,
`invalid`), in the very scrape that lacks the app's part; a warning is logged when a streak of failures
starts and a line when merging works again. Pillion's own text lints clean with `promtool check
metrics`; the app's part lints as cleanly as the app writes it.

## Turning metrics off

`metrics: {enabled: false}` stops the per-request work: requests are no longer counted or timed (the
route families above stay at zero) and `/metrics` answers 404 with `x-pillion-error: metrics_disabled`,
so a scrape fails loudly instead of reading zeros. It exists for the benchmark's "telemetry off"
baseline (`make bench` shows what metrics, tracing and the access log cost together) and for fleets
that take their numbers from access logs or traces. Connection and error counters are still kept, as
they cost nothing per request. The setting is read at startup; a reload does not change it.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type_cell(m: MetricInfo) -> str:
    if m.kind != "histogram":
        return m.kind
    return "histogram<br>buckets: " + ", ".join(format_value(b) for b in m.buckets)


def render() -> str:
    """The whole of docs/metrics.md."""
    metrics = catalogue()
    by_area: dict[str, list[MetricInfo]] = {title: [] for title, _, _ in AREAS}
    for m in metrics:
        by_area.setdefault(area_of(m.name), []).append(m)
    descriptions = {title: text for title, text, _ in AREAS}
    out = [INTRO, f"\n{len(metrics)} metric families in all.\n"]
    for title, members in by_area.items():
        if not members:
            continue
        out.append(f"\n## {title}\n\n{descriptions.get(title, 'Not yet placed in an area.')}\n\n")
        out.append("| Name | Type | Labels | Description |\n|---|---|---|---|\n")
        for m in sorted(members, key=lambda m: m.name):
            labels = ", ".join(f"`{label}`" for label in m.labels) or "-"
            when = "" if m.always else " *(when configured)*"
            out.append(f"| `{m.name}` | {_type_cell(m)} | {labels} | {_cell(m.help)}{when} |\n")
    used = sorted({label for m in metrics for label in m.labels})
    out.append("\n## Labels\n\nEvery label, what its values are, and what bounds their number.\n\n")
    out.append("| Label | Values |\n|---|---|\n")
    for label in used:
        out.append(f"| `{label}` | {_cell(LABELS.get(label, UNDOCUMENTED))} |\n")
    return "".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
