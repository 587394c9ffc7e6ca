"""`pillion wait` as an entrypoint wrapper runs it: a separate process against a real sidecar process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from pillion.testing.ports import free_port
from pillion.testing.process import ProcessRunner

PILLION = [sys.executable, "-m", "pillion"]


def wait(admin: int, timeout: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PILLION, "wait", "--admin", f"127.0.0.1:{admin}", "--timeout", timeout],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_wait_fails_while_no_sidecar_is_up() -> None:
    started = time.monotonic()
    done = wait(free_port(), "500ms")
    assert done.returncode == 1
    assert "not ready after 500ms" in done.stderr and "ConnectionRefused" in done.stderr
    assert time.monotonic() - started < 10


def test_wait_succeeds_once_the_sidecar_is_ready(tmp_path: Path) -> None:
    admin, port, app = free_port(), free_port(), free_port()
    cfg = tmp_path / "pillion.yaml"
    cfg.write_text(
        f"service: w\nadmin: {{address: 127.0.0.1:{admin}}}\n"
        f"listeners: [{{name: in, address: 127.0.0.1:{port}, routes: [{{cluster: app}}]}}]\n"
        f"clusters: [{{name: app, endpoints: [127.0.0.1:{app}]}}]\n"
    )
    # Started first, as in a pod where the app's wrapper may run before the sidecar is up.
    waiter = subprocess.Popen(
        [*PILLION, "wait", "--admin", f"127.0.0.1:{admin}", "--timeout", "20s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        assert waiter.poll() is None  # still waiting: nothing is up yet
        with ProcessRunner([*PILLION, "run", "-c", str(cfg)], wait_port=("127.0.0.1", admin)):
            assert waiter.wait(timeout=20) == 0
            assert wait(admin, "1s").returncode == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.communicate()


def test_wait_rejects_a_bad_address() -> None:
    done = subprocess.run(
        [*PILLION, "wait", "--admin", "nowhere", "--timeout", "1s"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "invalid address" in done.stderr
