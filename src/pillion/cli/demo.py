"""`pillion demo`: the example app with a sidecar in front of it, and a tour for a newcomer.

Starts the demo "orders" app on 127.0.0.1:8080 and a sidecar (the real Runtime, from the same YAML a
user would write) with its inbound listener on 127.0.0.1:15006 and admin on 127.0.0.1:9901. Sends a
little traffic through, prints what to try next and a few live metrics, then serves until Ctrl-C (or
`--duration` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

DEMO_CONFIG = """\
service: orders
admin:
  address: 127.0.0.1:{admin_port}
  ready_check: {{cluster: app, path: /healthz}}
listeners:
  - name: inbound
    address: 127.0.0.1:{inbound_port}
    routes:
      - match: {{prefix: /}}
        cluster: app
        timeout: 5s
clusters:
  - name: app
    endpoints: [127.0.0.1:{app_port}]
    connect_timeout: 1s
access_log: {{enabled: {access_log}}}
"""

SHOWN_METRICS = (
    "pillion_http_requests_total",
    "pillion_downstream_connections_active",
    "pillion_upstream_connections_total",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)"
    )
    parser.add_argument("--app-port", type=int, default=8080)
    parser.add_argument("--inbound-port", type=int, default=15006)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument("--access-log", action="store_true", help="print an access-log line per request")


def main(args: argparse.Namespace) -> int:
    import uvloop

    from pillion.config import load_config_text
    from pillion.telemetry.logging import setup_logging

    text = DEMO_CONFIG.format(
        admin_port=args.admin_port,
        inbound_port=args.inbound_port,
        app_port=args.app_port,
        access_log="true" if args.access_log else "false",
    )
    config = load_config_text(text, source="<demo>")
    setup_logging("warning")
    code: int = uvloop.run(_demo(config, text, args))
    return code


async def _demo(config: object, text: str, args: argparse.Namespace) -> int:
    from pillion.config import Config
    from pillion.demo.app import serve_demo_app
    from pillion.runtime.runtime import Runtime
    from pillion.testing.http import http_request

    assert isinstance(config, Config)
    try:
        app = await serve_demo_app("127.0.0.1", args.app_port)
    except OSError as exc:
        print(f"cannot start the demo app on 127.0.0.1:{args.app_port}: {exc.strerror}", file=sys.stderr)
        return 1
    runtime = Runtime(config)
    try:
        await runtime.start()
    except OSError as exc:
        print(f"cannot start the sidecar: {exc.strerror or exc}", file=sys.stderr)
        await runtime.shutdown()
        await app.close()
        return 1
    runtime.install_signal_handlers()
    inbound = f"127.0.0.1:{args.inbound_port}"
    admin = f"127.0.0.1:{args.admin_port}"
    out = sys.stdout.write
    out(f"Pillion demo: the 'orders' app on 127.0.0.1:{args.app_port}, its sidecar on {inbound}\n\n")
    out("The sidecar's configuration (pillion run -c FILE takes the same YAML):\n")
    out("".join(f"    {line}\n" for line in text.splitlines()) + "\n")
    out("Sending a little traffic through the sidecar:\n")
    for path in ("/", "/orders", "/orders/2", "/orders/999", "/fail"):
        r = await http_request("127.0.0.1", args.inbound_port, "GET", path)
        out(f"    GET {path:<12} -> {r.status}  ({len(r.body)} bytes)\n")
    hello = await http_request("127.0.0.1", args.inbound_port, "GET", "/")
    seen = "".join(f"    {line}\n" for line in hello.text.strip().splitlines())
    out(f"\nWhat the app answered (note the headers the sidecar added):\n{seen}\n")
    out("Try:\n")
    out(f"    curl -i http://{inbound}/orders           # through the sidecar\n")
    out(f"    curl -i http://{inbound}/slow?ms=200      # a slow answer, timed in the metrics\n")
    out(f"    curl http://{admin}/ready                 # readiness (the app's /healthz too)\n")
    out(f"    curl http://{admin}/metrics               # Prometheus metrics\n")
    out(f"    curl http://{admin}/clusters              # endpoints and their state\n")
    out(f"    curl http://{admin}/config_dump           # the configuration in force\n")
    out(f"    curl -X POST http://{admin}/quitquitquit  # graceful exit\n\n")
    out("A few live metrics:\n")
    for line in runtime.metrics_text().splitlines():
        if line.startswith(SHOWN_METRICS):
            out(f"    {line}\n")
    out("\nServing" + (f" for {args.duration:g}s" if args.duration else " until Ctrl-C") + ".\n")
    sys.stdout.flush()
    if args.duration:
        asyncio.get_running_loop().call_later(args.duration, runtime.quit)
    code = await runtime.serve()
    await app.close()
    return code
