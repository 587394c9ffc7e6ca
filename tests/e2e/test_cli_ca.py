"""`pillion ca init|issue|inspect` as a user runs them, checked with the real `openssl` command."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pillion.testing.tools import require_tool

PILLION = [sys.executable, "-m", "pillion"]
WEB = "spiffe://example.org/ns/default/sa/web"


def pillion(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PILLION, "ca", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def tool(*args: str | Path) -> str:
    return subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=60, check=True).stdout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("e2e") / "ca"
    done = pillion("init", "--dir", directory)
    assert done.returncode == 0, done.stderr
    return directory


def test_init_issue_inspect_and_openssl_agrees(ca: Path, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    assert mode(ca) == 0o700 and mode(ca / "ca-key.pem") == 0o600
    out = tmp_path / "web"
    done = pillion("issue", "--ca", ca, "--spiffe-id", WEB, "--out", out, "--ttl", "2h")
    assert done.returncode == 0, done.stderr
    assert f"issued {WEB}" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["bundle.pem", "cert.pem", "key.pem"]
    assert mode(out / "key.pem") == 0o600

    text = tool(openssl, "x509", "-in", out / "cert.pem", "-noout", "-text")
    assert f"URI:{WEB}" in text
    assert "CA:FALSE" in text and "Digital Signature" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "ASN1 OID: prime256v1" in text
    verified = tool(openssl, "verify", "-CAfile", out / "bundle.pem", out / "cert.pem")
    assert verified.strip() == f"{out / 'cert.pem'}: OK"
    # The key really belongs to the certificate.
    assert tool(openssl, "pkey", "-in", out / "key.pem", "-pubout") == tool(
        openssl, "x509", "-in", out / "cert.pem", "-noout", "-pubkey"
    )

    done = pillion("inspect", out / "cert.pem")
    assert done.returncode == 0, done.stderr
    assert f"SPIFFE ID:   {WEB}" in done.stdout and "leaf, a valid X509-SVID" in done.stdout
    assert "status:      valid, expires in 2h" in done.stdout or "expires in 1h59m" in done.stdout
    fingerprint = tool(openssl, "x509", "-in", out / "cert.pem", "-noout", "-fingerprint", "-sha256")
    assert fingerprint.strip().split("=", 1)[1] in done.stdout
    done = pillion("inspect", ca / "ca.pem")
    assert done.returncode == 0 and "CA (path length 0)" in done.stdout


def test_init_refuses_to_overwrite(ca: Path) -> None:
    key = (ca / "ca-key.pem").read_bytes()
    done = pillion("init", "--dir", ca)
    assert done.returncode == 1 and "refusing to replace a CA" in done.stderr
    assert (ca / "ca-key.pem").read_bytes() == key


ERRORS = [
    (
        "missing CA dir",
        ["issue", "--ca", "{tmp}/nope", "--spiffe-id", WEB, "--out", "{tmp}/o"],
        "nope does not",
    ),
    (
        "invalid CA PEM",
        ["issue", "--ca", "{tmp}/bad", "--spiffe-id", WEB, "--out", "{tmp}/o"],
        "bad/ca.pem: not",
    ),
    (
        "bad SPIFFE ID",
        ["issue", "--ca", "{ca}", "--spiffe-id", "spiffe://x/a//b", "--out", "{tmp}/o"],
        "empty path",
    ),
    (
        "no SPIFFE path",
        ["issue", "--ca", "{ca}", "--spiffe-id", "spiffe://x", "--out", "{tmp}/o"],
        "needs a path",
    ),
    (
        "bad TTL",
        ["issue", "--ca", "{ca}", "--spiffe-id", WEB, "--out", "{tmp}/o", "--ttl", "1d"],
        "invalid duration",
    ),
    (
        "zero TTL",
        ["issue", "--ca", "{ca}", "--spiffe-id", WEB, "--out", "{tmp}/o", "--ttl", "0s"],
        "more than zero",
    ),
    ("bad CA TTL", ["init", "--dir", "{tmp}/new", "--ttl=-1h"], "negative duration"),
    (
        "out under a file",
        ["issue", "--ca", "{ca}", "--spiffe-id", WEB, "--out", "{tmp}/file/o"],
        "Not a directory",
    ),
    ("inspect missing", ["inspect", "{tmp}/missing.pem"], "missing.pem: no such file"),
    ("inspect garbage", ["inspect", "{tmp}/bad/ca.pem"], "not a valid PEM or DER certificate"),
    ("inspect a key", ["inspect", "{ca}/ca-key.pem"], "holds a private key, not a certificate"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_exit_1_with_one_line_and_no_traceback(
    ca: Path, tmp_path: Path, case: tuple[str, list[str], str]
) -> None:
    _name, args, message = case
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (tmp_path / "bad" / "ca-key.pem").write_text("not a key")
    (tmp_path / "file").write_text("")
    done = pillion(*(a.format(tmp=tmp_path, ca=ca) for a in args))
    assert done.returncode == 1, done
    assert message in done.stderr, done.stderr
    assert done.stderr.startswith(f"pillion ca {args[0]}: ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "o").exists() and not (tmp_path / "new").exists()


def test_help_loads_no_cryptography() -> None:
    """`pillion ca --help` answers without importing the X.509 stack (the CLI imports it per action)."""
    code = "import sys; from pillion.cli import main\ntry: main(['ca', '--help'])\nexcept SystemExit: pass\n"
    code += "assert 'cryptography' not in sys.modules, 'cryptography imported'"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "init" in done.stdout and "issue" in done.stdout and "inspect" in done.stdout
