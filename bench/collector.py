"""The benchmark's OTLP/HTTP collector, so the all-telemetry Pillion row exports its spans for real.

`python bench/collector.py PORT` (127.0.0.1) runs the project's test collector,
`pillion.testing.collector.FakeCollector`, until SIGTERM or SIGINT. It answers `POST /v1/traces` as a
real collector does (it decodes every span of the OTLP protobuf body and answers 200 with an
`ExportTraceServiceResponse`), and `GET /stats` with one JSON object: `spans` (recorded so far),
`exports` (export requests received) and `failed_exports` (those answered other than 200, e.g. a body
that did not decode). The harness reads `/stats` before and after a visit to count the spans it
produced. Spans are counted, not kept, so memory stays flat however long the run. It prints nothing per
request: `ready URL` once it listens, and the `/stats` object once more when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from pillion.testing.collector import FakeCollector
from pillion.testing.server import ServerRequest, ServerResponse

HOST = "127.0.0.1"
STATS_PATH = "/stats"


class BenchCollector(FakeCollector):
    """FakeCollector plus `GET /stats`; recorded spans are counted and then let go."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.spans_received = 0

    def stats(self) -> dict[str, int]:
        return {
            "spans": self.spans_received,
            "exports": len(self.exports),
            "failed_exports": sum(1 for e in self.exports if e.status != 200),
        }

    async def handle(self, request: ServerRequest, response: ServerResponse) -> None:
        if request.method == "GET" and request.path == STATS_PATH:
            body = json.dumps(self.stats()).encode()
            await response.send(200, body, content_type="application/json")
            return
        await super().handle(request, response)
        self.spans_received += len(self.spans)
        self.spans.clear()


async def main(port: int) -> None:
    collector = await BenchCollector(HOST, port).start()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print(f"ready {collector.url}", flush=True)
    await done.wait()
    print(json.dumps(collector.stats()), flush=True)
    await collector.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/collector.py", description=__doc__.splitlines()[0])
    p.add_argument("port", type=int, help="the port to listen on, on 127.0.0.1")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args().port))
