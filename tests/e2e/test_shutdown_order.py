"""Shutdown order on SIGTERM: inbound stops accepting at once; outbound keeps carrying the app's calls
until none is left (or drain_timeout), then the process exits 0. A real `pillion run` process."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import uvloop

from pillion.testing.http import ClientConnection
from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner
from pillion.testing.upstream import ScriptableUpstream

HOST = "127.0.0.1"


def test_sigterm_closes_inbound_and_keeps_outbound_until_the_apps_calls_are_done(tmp_path: Path) -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:
            inbound, outbound, admin = free_port(), free_port(), free_port()
            cfg = tmp_path / "pillion.yaml"
            cfg.write_text(
                f"service: s\nadmin: {{address: '{HOST}:{admin}'}}\ndrain_timeout: 10s\n"
                "listeners:\n"
                f"  - {{name: in, address: '{HOST}:{inbound}', routes: [{{cluster: app}}]}}\n"
                f"  - {{name: out, address: '{HOST}:{outbound}', direction: outbound,\n"
                "      routes: [{cluster: app}]}\n"
                f"clusters: [{{name: app, endpoints: ['{up.address}']}}]\n"
            )
            async with ProcessRunner(
                [sys.executable, "-m", "pillion", "run", "-c", str(cfg)],
                wait_url=f"http://{HOST}:{admin}/ready",
            ) as proc:
                assert proc.popen is not None
                slow = await ClientConnection.open(HOST, outbound)
                in_flight = asyncio.ensure_future(slow.request("GET", "/delay/1.5"))
                await asyncio.sleep(0.2)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                try:  # inbound: closed at once
                    await asyncio.open_connection(HOST, inbound)
                    raise AssertionError("inbound still accepting while draining")
                except ConnectionRefusedError:
                    pass
                # outbound: the app can still make new calls; each answer closes its connection
                async with await ClientConnection.open(HOST, outbound) as conn:
                    late = await conn.request("GET", "/late")
                assert late.status == 200 and late.header("connection") == "close"
                response = await in_flight
                assert response.status == 200 and response.header("connection") == "close"
                await slow.close()
                started = time.monotonic()
                code = await asyncio.to_thread(proc.popen.wait, 5)
                assert (
                    code == 0 and time.monotonic() - started < 5
                )  # exited once no connection was left, well before 10 s
            assert [r.target for r in up.requests] == ["/delay/1.5", "/late"]

    uvloop.run(main())
