"""`pillion validate` and `pillion schema` as a user runs them: separate processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "pillion.yaml"

BAD = """\
service: orders
listeners:
  - name: inbound
    address: 0.0.0.0:15006
    routes:
      - {match: {prefix: /app}, cluster: app}
      - {match: {prefix: /pay}, cluster: paymnts}
clusters:
  - {name: app, endpoints: [127.0.0.1:8080]}
  - {name: payments, endpoints: [127.0.0.1:9090]}
"""


def pillion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pillion", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_validate_accepts_the_example() -> None:
    result = pillion("validate", "-c", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{EXAMPLE}: ok (1 listener, 1 cluster)\n"


def test_validate_accepts_the_outbound_example() -> None:
    outbound = EXAMPLE.with_name("outbound.yaml")
    result = pillion("validate", "-c", str(outbound))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{outbound}: ok (2 listeners, 6 clusters)\n"


def test_validate_reports_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = pillion("validate", "-c", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "listeners[0].routes[1].cluster: unknown cluster 'paymnts'; did you mean 'payments'?"
    ]


def test_validate_reports_a_missing_file(tmp_path: Path) -> None:
    result = pillion("validate", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "cannot read the file" in result.stderr


def test_schema_prints_json() -> None:
    result = pillion("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "Listener" in schema["$defs"]
