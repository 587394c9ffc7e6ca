"""TLS is loaded only by a process whose configuration uses it.

Theory of operation. asyncio and uvloop import the `ssl` module when they load, whether or not a TLS
connection is ever made, and `ssl` maps OpenSSL's libcrypto and libssl: about 4.5 MiB of resident
memory, the largest single item in a plaintext sidecar (measured: 31.9 -> 27.5 MiB at start-up).
`pillion run` therefore looks at the configuration *before* the event loop is imported. If nothing in it
uses TLS (`tls_uses` returns no paths), `defer_ssl()` puts a stand-in `ssl` module in `sys.modules`:
it carries the few names asyncio and uvloop read at import time, and any other use raises an error
that says why. Once the stand-in is in, TLS cannot come later in the same process (uvloop keeps the
stand-in's exception classes), so a reload that turns TLS on is refused with `reload_refusal()`'s
message, counted as a failed reload, and the running configuration stays; restarting the process
picks TLS up. A configuration that uses TLS from the start loads the real module and reloads freely.

`hashlib` is kept out for the same reason (it loads libcrypto too): the hot modules take BLAKE2 from
the built-in `_blake2`, which is what `hashlib.blake2b` is anyway.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from pillion.config.model import Config

_WHY = "TLS is not loaded in this process: it started with a configuration that uses no TLS"


def tls_uses(config: Config) -> list[str]:
    """The config paths that need TLS (empty when the process can run without it)."""
    uses = ["identity"] if config.identity is not None else []
    uses += [f"listeners[{i}].tls" for i, lc in enumerate(config.listeners) if lc.tls.mode != "off"]
    uses += [f"clusters[{i}].tls" for i, cc in enumerate(config.clusters) if cc.tls.mode != "off"]
    if config.tracing is not None and config.tracing.otlp_endpoint.lower().startswith("https:"):
        uses.append("tracing.otlp_endpoint")
    return uses


class _Deferred(types.ModuleType):
    """The stand-in `ssl`: what asyncio and uvloop read at import time, and a clear error for the rest."""

    def __getattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"ssl.{name}: {_WHY}; restart pillion to use TLS")


def _refuse(*_args: object, **_kwargs: object) -> NoReturn:
    raise RuntimeError(f"{_WHY}; restart pillion to use TLS")


def defer_ssl() -> bool:
    """Install the stand-in unless `ssl` is loaded already; True when it is in place."""
    if "ssl" in sys.modules:
        return is_deferred()
    stub = _Deferred("ssl", f"Stand-in for the ssl module ({_WHY}).")
    error = type("SSLError", (OSError,), {"__module__": "ssl"})
    names: dict[str, object] = {
        "SSLError": error,
        "SSLZeroReturnError": type("SSLZeroReturnError", (error,), {"__module__": "ssl"}),
        "SSLWantReadError": type("SSLWantReadError", (error,), {"__module__": "ssl"}),
        "SSLWantWriteError": type("SSLWantWriteError", (error,), {"__module__": "ssl"}),
        "SSLSyscallError": type("SSLSyscallError", (error,), {"__module__": "ssl"}),
        "SSLEOFError": type("SSLEOFError", (error,), {"__module__": "ssl"}),
        "CertificateError": type("SSLCertVerificationError", (error, ValueError), {"__module__": "ssl"}),
        "SSLContext": _refuse,
        "MemoryBIO": _refuse,
        "create_default_context": _refuse,
        # the values of OpenSSL's SSL_ERROR_* codes, which uvloop copies into C ints
        "SSL_ERROR_WANT_READ": 2,
        "SSL_ERROR_WANT_WRITE": 3,
        "SSL_ERROR_SYSCALL": 5,
    }
    stub.__dict__.update(names)
    sys.modules["ssl"] = stub
    return True


def is_deferred() -> bool:
    """Whether this process runs with the stand-in (so TLS cannot be turned on without a restart)."""
    return isinstance(sys.modules.get("ssl"), _Deferred)


def reload_refusal(config: Config) -> str | None:
    """Why `config` cannot be applied by a reload here, or None when it can."""
    uses = tls_uses(config) if is_deferred() else []
    if not uses:
        return None
    return f"{uses[0]}: {_WHY}; restart pillion to turn TLS on"
