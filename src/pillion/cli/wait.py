"""`pillion wait --admin ADDRESS --timeout 30s`: block until that sidecar is ready.

Theory of operation: the `pilot-agent wait` / `linkerd-await` role. An app container's entrypoint
wrapper (or a postStart hook) runs it so the app starts only once its sidecar can carry traffic: GET
`/ready` on the sidecar's admin address every 100 ms until it answers 200 (exit 0) or the timeout
passes (exit 1, saying what the last attempt saw). Plain blocking sockets, no event loop: this runs once,
in another container, and should start in milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time

from pillion.config.address import parse_address
from pillion.config.units import parse_duration

POLL_SECONDS = 0.1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin", default="127.0.0.1:9901", metavar="ADDRESS", help="the sidecar's admin address (host:port)"
    )
    parser.add_argument("--timeout", default="30s", metavar="DURATION", help="give up after this long")


def main(args: argparse.Namespace) -> int:
    try:
        address = parse_address(args.admin)
        timeout = float(parse_duration(args.timeout))
    except ValueError as exc:
        print(f"pillion wait: {exc}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        last = _probe(address.host, address.port)
        if last == "200":
            return 0
        if time.monotonic() >= deadline:
            print(
                f"pillion wait: {args.admin} not ready after {args.timeout} (last: {last})", file=sys.stderr
            )
            return 1
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _probe(host: str, port: int) -> str:
    """The status of GET /ready as text, or what went wrong."""
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", "/ready")
        return str(conn.getresponse().status)
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__ + (f": {exc}" if str(exc) else "")
    finally:
        conn.close()
