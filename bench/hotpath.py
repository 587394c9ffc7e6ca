"""The data plane's own Python cost per request, with no sockets: `python bench/hotpath.py`.

A real Runtime (listener, router, cluster, stats) is built from a config; its downstream and upstream
protocol objects are driven with fake transports that only collect what is written. Each iteration
feeds one request (the bytes wrk sends) and one upstream response (the bytes the benchmark's nginx
upstream sends) and checks what came out, so the number is the per-request Python work of the real
code path: parse, route, pool, forward, frame, count. It complements `make bench`, which measures the
whole process (Python plus syscalls plus scheduling) against HAProxy and nginx.

`--profile` runs the same loop under cProfile and prints the top functions. `--outbound` uses the
benchmark's outbound config (host routing past three routes, retries, circuit breaker, outlier
detection) instead of the one-route inbound config. `--telemetry` picks what the request pays for:
`metrics` (the default, as `make bench` runs it), `off` (no metrics, access log or tracing), or `full`
(metrics, tracing at 1% sampling and the access log to a file: the benchmark's overhead row), or one of
those two alone (`log`, `tracing`).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from typing import Any

from servers import pillion_outbound_yaml

from pillion.config import load_config_text
from pillion.proxy.downstream import DownstreamConnection
from pillion.proxy.listener import HttpListener
from pillion.proxy.upstream import UpstreamConnection
from pillion.runtime.runtime import Runtime
from pillion.testing.sidecar import sidecar_config
from pillion.testing.transports import RecordingTransport, hand_driven

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18081\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026 13:48:39 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n"
)


def telemetry_config(telemetry: str, log_dir: str) -> dict[str, Any]:
    """The top-level config keys for a `--telemetry` choice."""
    if telemetry == "off":
        return {"metrics": {"enabled": False}}
    top: dict[str, Any] = {}
    if telemetry in ("full", "tracing"):
        # Nothing listens there: 1% of requests make a span, and the exporter counts the failed batch.
        top["tracing"] = {"otlp_endpoint": "http://127.0.0.1:9/v1/traces", "sampling": 0.01}
    if telemetry in ("full", "log"):
        top["access_log"] = {"enabled": True, "path": f"{log_dir}/access.log"}
    return top


def setup(
    outbound: bool, telemetry: str, log_dir: str
) -> tuple[DownstreamConnection, UpstreamConnection, RecordingTransport, RecordingTransport]:
    top = telemetry_config(telemetry, log_dir)
    runtime = Runtime(
        load_config_text(pillion_outbound_yaml(0, 0, 1))
        if outbound
        else sidecar_config(["127.0.0.1:1"], **top)
    )
    listener = runtime.listeners[0]
    assert isinstance(listener, HttpListener)
    # The loop never runs between requests here, so the batch is flushed by hand after each read, as
    # the loop would once per pass (the loop's own call_soon is left out: it is paid once per pass).
    hand_driven(listener)
    endpoint = runtime.clusters["app"].endpoints[0]
    down = DownstreamConnection(listener)
    down_t, up_t = RecordingTransport(), RecordingTransport()
    down.connection_made(down_t)  # type: ignore[arg-type]
    up = UpstreamConnection(endpoint)
    up.connection_made(up_t)  # type: ignore[arg-type]
    endpoint.give_back(up, 0.0)
    return down, up, down_t, up_t


def run(n: int, outbound: bool, telemetry: str = "metrics") -> float:
    with tempfile.TemporaryDirectory() as log_dir:
        return _run(n, outbound, telemetry, log_dir)


def _run(n: int, outbound: bool, telemetry: str, log_dir: str) -> float:
    down, up, down_t, up_t = setup(outbound, telemetry, log_dir)
    feed_down, feed_up, flush = down.data_received, up.data_received, down.listener.batch.flush
    # One checked round trip, so a broken path cannot report a fast number.
    feed_down(REQUEST)
    flush()
    feed_up(RESPONSE)
    flush()
    assert up_t.written and up_t.written[-1].startswith(b"GET / HTTP/1.1\r\n"), up_t.written
    assert down_t.written and down_t.written[-1].endswith(b"\r\n\r\nhello world\n"), down_t.written
    start = time.perf_counter()
    for _ in range(n):
        feed_down(REQUEST)
        flush()
        feed_up(RESPONSE)
        flush()
        if len(down_t.written) > 1000:
            down_t.written.clear()
            up_t.written.clear()
    elapsed = time.perf_counter() - start
    served = next(r for r in down.listener.router.routes if r.cluster is not None and r.cluster.name == "app")
    counted = served.by_code.get(200)
    assert (counted.value if counted else 0) == (0 if telemetry == "off" else n + 1)
    if down.listener.access_log is not None:
        down.listener.access_log.close()
    return elapsed / n * 1e6


async def main_async(args: argparse.Namespace) -> None:
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(run, args.n, args.outbound, args.telemetry)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    results = sorted(run(args.n, args.outbound, args.telemetry) for _ in range(args.rounds))
    # The minimum is the figure least disturbed by whatever else the machine runs.
    shown = ", ".join(f"{r:.2f}" for r in results)
    print(f"hot path: {results[0]:.2f} µs/request (best of {args.rounds}: {shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--outbound", action="store_true", help="the benchmark's outbound config")
    parser.add_argument(
        "--telemetry", choices=("metrics", "off", "full", "log", "tracing"), default="metrics"
    )
    args = parser.parse_args()
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
