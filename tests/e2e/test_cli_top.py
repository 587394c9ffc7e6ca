"""`pillion top` against a real `pillion run` process under traffic: `--once` as a subprocess, and the live
curses view driven in a real terminal (tmux: start it, read the screen, press q).

The sidecar has two routes on one cluster of two endpoints. One endpoint answers 503 to everything and is
ejected by outlier detection before the measurement starts; the other serves the traffic: route `api`
answers every 5th request 404, route `web` every 4th request 500 and takes ~10 ms for the rest. Those
shares are what the screen must show.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvloop

from pillion.testing.http import ClientConnection, http_request
from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner
from pillion.testing.tools import require_tool
from pillion.testing.upstream import BEHAVIOUR_HEADER, ScriptableUpstream

HOST = "127.0.0.1"
PILLION = [sys.executable, "-m", "pillion"]
TRAFFIC_LIMIT = 60.0  # seconds: the traffic loop's own bound, far above any test's need


@dataclass
class Sidecar:
    admin: str
    good: str
    bad: str


def write_config(tmp_path: Path, good: str, bad: str, admin: int | None = None) -> tuple[Path, int, int]:
    port, admin = free_port(), admin or free_port()
    cfg = tmp_path / "pillion.yaml"
    cfg.write_text(
        f"""
service: toptest
admin: {{address: "{HOST}:{admin}"}}
drain_timeout: 1s
listeners:
  - name: inbound
    address: "{HOST}:{port}"
    routes:
      - name: api
        match: {{prefix: /api}}
        cluster: app
      - name: web
        match: {{prefix: /}}
        cluster: app
clusters:
  - name: app
    endpoints: ["{good}", "{bad}"]
    outlier_detection: {{consecutive_5xx: 3, base_ejection: 5m}}
"""
    )
    return cfg, port, admin


async def eject(port: int, admin: int, bad: str) -> None:
    """Send requests until outlier detection has ejected the failing endpoint (round robin gives it every
    other one, so three of its 503s take about six requests)."""
    async with await ClientConnection.open(HOST, port) as conn:
        for _ in range(50):
            await conn.request("GET", "/api/warmup")
            clusters = (await http_request(HOST, admin, "GET", "/clusters")).json()["clusters"]
            states = {e["address"]: e["state"] for e in clusters[0]["endpoints"]}
            if states[bad] == "ejected":
                return
    raise AssertionError(f"{bad} never ejected: {states}")


async def traffic(port: int, stop: asyncio.Event) -> None:
    """Both routes, one keep-alive connection, until `stop` (or TRAFFIC_LIMIT)."""
    deadline = time.monotonic() + TRAFFIC_LIMIT
    async with await ClientConnection.open(HOST, port) as conn:
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            i += 1
            api = [(BEHAVIOUR_HEADER, "/status/404")] if i % 5 == 0 else []
            await conn.request("GET", f"/api/items/{i}", headers=api)
            # Never two 5xx in a row at the healthy endpoint: it must not be ejected too.
            web = [(BEHAVIOUR_HEADER, "/status/500")] if i % 4 == 0 else []
            await conn.request("GET", "/delay/0.01", headers=web)


@asynccontextmanager
async def sidecar_under_traffic(tmp_path: Path, admin: int | None = None) -> AsyncIterator[Sidecar]:
    async with ScriptableUpstream() as good, ScriptableUpstream() as bad:
        bad.override = "/status/503"
        cfg, port, admin = write_config(tmp_path, good.address, bad.address, admin)
        async with ProcessRunner([*PILLION, "run", "-c", str(cfg)], wait_url=f"http://{HOST}:{admin}/ready"):
            await eject(port, admin, bad.address)
            stop = asyncio.Event()
            driver = asyncio.ensure_future(traffic(port, stop))
            try:
                await asyncio.sleep(0.3)  # traffic flowing before anyone measures it
                yield Sidecar(f"{HOST}:{admin}", good.address, bad.address)
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(driver, 10)
                driver.cancel()
            assert not driver.cancelled() and driver.exception() is None, driver


def table(screen: str, title: str) -> dict[str, list[str]]:
    """The rows of the table under `title` (up to the next blank line), by their name cells joined."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    headings = lines[start + 1].split()
    names = {"ROUTES": 3, "CLUSTERS": 1, "ENDPOINTS": 2}[title]
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = line.split()
        assert len(cells) == len(headings), (headings, line)
        rows[" ".join(cells[:names])] = cells
    return rows


def seconds(cell: str) -> float:
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if cell.endswith(unit):
            return float(cell[: -len(unit)]) * scale
    raise AssertionError(f"not a latency: {cell!r}")


def percent(cell: str) -> float:
    assert cell.endswith("%"), cell
    return float(cell[:-1])


def check_screen(screen: str, side: Sidecar) -> None:
    """What both front ends must show for this sidecar under this traffic."""
    assert f"pillion top: toptest at {side.admin} (pillion " in screen, screen
    routes = table(screen, "ROUTES")
    api, web = routes["inbound api app"], routes["inbound web app"]
    for row in (api, web):
        assert float(row[3]) > 0, row  # REQ/S
        p50, p99 = seconds(row[6]), seconds(row[7])
        assert 0 < p50 <= p99, row
    # The scripted shares (20% 404 on api, 25% 500 on web), give or take the requests an interval cuts.
    assert percent(api[4]) == 0 and 10 <= percent(api[5]) <= 30, api
    assert 15 <= percent(web[4]) <= 35 and percent(web[5]) == 0, web
    assert seconds(web[6]) >= 0.01 > seconds(api[6]), (api, web)  # web's 10 ms delay shows in its p50
    clusters = table(screen, "CLUSTERS")
    assert clusters["app"][-1] == "1/2", clusters  # HEALTHY
    endpoints = table(screen, "ENDPOINTS")
    assert endpoints[f"app {side.bad}"][2:3] == ["ejected"] and endpoints[f"app {side.bad}"][-1] == "1"
    assert endpoints[f"app {side.good}"][2] == "healthy" and float(endpoints[f"app {side.good}"][4]) > 0


async def run_top(*args: str, time_limit: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *PILLION, "top", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), time_limit)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_once_prints_routes_errors_latencies_and_the_ejected_endpoint(tmp_path: Path) -> None:
    async def main() -> None:
        async with sidecar_under_traffic(tmp_path) as side:
            code, out, err = await run_top("--admin", side.admin, "--once", "--interval", "0.5s")
            print(out)
            assert code == 0 and err == "", err
            check_screen(out, side)
            # The polls start 0.5 s apart; what they cover is measured, and a busy machine may stretch it.
            covered = re.search(r"over the last ([0-9.]+)s", out)
            assert covered is not None and 0.45 <= float(covered.group(1)) < 5, out

    uvloop.run(main())


class Terminal:
    """`pillion top` in a tmux session on a private tmux server (-L). The server starts from this process,
    so the command inherits this environment (PYTHONPATH for the compiled build), and the test never
    touches anyone's own sessions. `close` ends the session and the server, whatever state they are in."""

    SESSION = "pilliontop"

    def __init__(self, width: int = 160, height: int = 40) -> None:
        self.base = [require_tool("tmux"), "-L", f"pillion-top-{os.getpid()}"]
        self.size = (str(width), str(height))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10, check=False)

    async def arun(self, *args: str) -> subprocess.CompletedProcess[str]:
        # In a thread: the loop keeps serving the in-process upstreams the sidecar talks to.
        return await asyncio.to_thread(self.run, *args)

    async def start(self, *top_args: str) -> None:
        command = shlex.join([*PILLION, "top", *top_args])
        width, height = self.size
        done = await self.arun("new-session", "-d", "-s", self.SESSION, "-x", width, "-y", height, command)
        assert done.returncode == 0, done.stderr

    async def screen(self) -> str:
        return (await self.arun("capture-pane", "-p", "-t", self.SESSION)).stdout

    async def wait_for(self, *texts: str, time_limit: float = 10.0) -> str:
        """The screen once it shows every one of `texts` (it is polled every 0.1 s)."""
        screen = ""
        for _ in range(int(time_limit * 10)):
            screen = await self.screen()
            if all(text in screen for text in texts):
                return screen
            await asyncio.sleep(0.1)
        raise AssertionError(f"never on screen: {texts}\n{screen}")

    async def running(self) -> bool:
        return (await self.arun("has-session", "-t", self.SESSION)).returncode == 0

    def close(self) -> None:
        self.run("kill-session", "-t", self.SESSION)
        self.run("kill-server")


def test_live_view_in_a_terminal_shows_the_same_and_quits_on_q(tmp_path: Path) -> None:
    async def main() -> None:
        async with sidecar_under_traffic(tmp_path) as side:
            term = Terminal(160, 40)
            try:
                await term.start("--admin", side.admin, "--interval", "0.5s")
                screen = await term.wait_for("over the last", "ENDPOINTS")
                print(screen)
                assert "q quits" in screen and "Traceback" not in screen, screen
                check_screen(screen, side)

                # A smaller window: redrawn to fit at once, with a note of what no longer does.
                await term.arun("resize-window", "-t", term.SESSION, "-x", "70", "-y", "10")
                small = await term.wait_for("more lines: enlarge the window")
                lines = small.splitlines()
                assert len(lines) <= 10 and all(len(line) <= 70 for line in lines), small
                assert "ROUTES" in small, small

                await term.arun("send-keys", "-t", term.SESSION, "q")
                for _ in range(50):  # the session ends when its only command, top, exits
                    if not await term.running():
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("pillion top still running 5 s after q")
            finally:
                term.close()

    uvloop.run(main())


def test_live_view_says_when_the_admin_api_is_unreachable_and_recovers(tmp_path: Path) -> None:
    """Started before its sidecar, top says why there is nothing to show, and shows the sidecar once it
    is up: it kept retrying."""

    async def main() -> None:
        admin = free_port()
        term = Terminal(100, 40)
        try:
            await term.start("--admin", f"{HOST}:{admin}", "--interval", "0.5s")
            down = await term.wait_for("cannot reach the admin API", "retrying every 0.5s")
            assert f"{HOST}:{admin}" in down and "ConnectionRefusedError" in down, down
            assert "Traceback" not in down
            async with sidecar_under_traffic(tmp_path, admin=admin) as side:
                # Two intervals: the rates on screen then cover only the steady traffic, not the warm-up
                # that had the failing endpoint ejected.
                await asyncio.sleep(1.2)
                up = await term.wait_for("over the last", "ENDPOINTS")
                assert "cannot reach" not in up, up
                check_screen(up, side)
            assert await term.running()  # through all of it
        finally:
            term.close()

    uvloop.run(main())


def test_once_exits_1_with_a_message_when_the_admin_api_is_unreachable() -> None:
    code, out, err = asyncio.run(run_top("--admin", f"{HOST}:{free_port()}", "--once", "--interval", "0.1s"))
    assert code == 1 and out == ""
    assert "cannot reach the admin API" in err and "ConnectionRefusedError" in err
    assert "Traceback" not in err


def test_once_exits_1_when_the_address_is_not_an_admin_api() -> None:
    async def main() -> None:
        async with ScriptableUpstream() as up:  # answers 200 "GET /metrics", not Prometheus text
            code, _, err = await run_top("--admin", up.address, "--once", "--interval", "0.1s")
            assert code == 1 and "Traceback" not in err
            assert "/metrics" in err, err

    uvloop.run(main())


def test_bad_arguments_and_no_terminal_exit_2() -> None:
    for args, message in (
        (["--interval", "soon"], "invalid duration"),
        (["--interval", "0s"], "at least"),
        (["--admin", "nowhere"], ""),
        ([], "needs a terminal"),  # stdin and stdout are pipes here
    ):
        code, _, err = asyncio.run(run_top(*args))
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
