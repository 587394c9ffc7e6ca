"""`pillion run -c CFG -- CMD ARGS`: the sidecar starts the app once it is up, passes signals on, and
exits with the app's exit code (the Kubernetes Job case). Real processes throughout."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import uvloop

from pillion.testing.ports import free_port
from pillion.testing.upstream import ScriptableUpstream

PILLION = [sys.executable, "-m", "pillion"]


def write_config(tmp_path: Path, upstream: str) -> tuple[Path, int]:
    port, admin = free_port(), free_port()
    path = tmp_path / "pillion.yaml"
    path.write_text(
        f"service: job\nadmin: {{address: 127.0.0.1:{admin}}}\ndrain_timeout: 2s\n"
        f"listeners: [{{name: outbound, address: 127.0.0.1:{port}, routes: [{{cluster: app}}]}}]\n"
        f"clusters: [{{name: app, endpoints: ['{upstream}']}}]\n"
    )
    return path, port


async def run_pillion(*args: str, signal_after: float | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *PILLION, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        if signal_after is not None:
            await asyncio.sleep(signal_after)
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


def test_exits_with_the_apps_exit_code(tmp_path: Path) -> None:
    cfg, _ = write_config(tmp_path, "127.0.0.1:1")
    code, output = uvloop.run(
        run_pillion("run", "-c", str(cfg), "--", "python3", "-c", "import sys; sys.exit(3)")
    )
    assert code == 3, output


def test_the_app_runs_once_the_sidecar_carries_its_calls(tmp_path: Path) -> None:
    async def main() -> None:
        async with ScriptableUpstream(name="payments") as up:
            cfg, port = write_config(tmp_path, up.address)
            # The app's very first action is a call through the sidecar: it must already be listening.
            app = (
                "import sys, urllib.request\n"
                f"r = urllib.request.urlopen('http://127.0.0.1:{port}/charge', timeout=5)\n"
                "sys.exit(0 if r.status == 200 and r.headers['x-upstream'] == 'payments' else 9)\n"
            )
            code, output = await run_pillion("run", "-c", str(cfg), "--", sys.executable, "-c", app)
            assert code == 0, output
            assert [r.target for r in up.requests] == ["/charge"]

    uvloop.run(main())


def test_sigterm_goes_to_the_app_and_its_exit_code_comes_back(tmp_path: Path) -> None:
    cfg, _ = write_config(tmp_path, "127.0.0.1:1")
    app = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
        "print('app ready', flush=True)\n"
        "time.sleep(20)\n"
    )
    code, output = uvloop.run(
        run_pillion("run", "-c", str(cfg), "--", sys.executable, "-c", app, signal_after=2.0)
    )
    assert code == 7, output
    assert "app ready" in output


def test_an_app_that_cannot_start_exits_127(tmp_path: Path) -> None:
    cfg, _ = write_config(tmp_path, "127.0.0.1:1")
    code, output = uvloop.run(run_pillion("run", "-c", str(cfg), "--", "/nonexistent/app"))
    assert code == 127, output
    assert "cannot start the app" in output
