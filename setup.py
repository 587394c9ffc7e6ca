"""Build hook: compile the data plane's hot modules with mypyc (the source stays plain, typed Python).

Theory of operation: the modules below run for every request. mypyc turns each into a C extension
with native classes (attributes at fixed offsets, direct calls between compiled functions), which cuts
the proxy's own Python cost per request by about a third (bench/hotpath.py). Everything else (config,
admin, CLI) stays interpreted: it runs rarely and starts faster that way.

The extensions are optional: without a C compiler, or with `PILLION_PURE_PYTHON=1`, the package installs
as pure Python and behaves the same, only slower. Editable development installs set that variable (see
the Makefile), so an edited .py file is what runs; `make test` also runs the suite against a compiled
build, and `make bench` measures the compiled build.
"""

from __future__ import annotations

import os

from setuptools import setup

HOT_MODULES = [
    "http/header_edit",
    "http/headers",
    "http/local_reply",
    "http/request_id",
    "http/strict",
    "proxy/balancer",
    "proxy/batch",
    "proxy/cluster",
    "proxy/deadlines",
    "proxy/listener",
    "proxy/downstream",
    "proxy/retry_budget",
    "proxy/retry_policy",
    "proxy/route_match",
    "proxy/router",
    "proxy/upstream",
    "filters/fault",
    "filters/rate_limit",
    "telemetry/access_log",
    "telemetry/stats",
    "telemetry/trace_context",
    "telemetry/tracer",
    "tls/mux",
    "tls/transport",
]


def extensions() -> list[object]:
    if os.environ.get("PILLION_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("pillion: mypyc is not available; installing pure Python")
        return []
    modules = mypycify([f"src/pillion/{m}.py" for m in HOT_MODULES], opt_level="3")
    for ext in modules:
        ext.optional = True  # no compiler: a warning, and the pure Python modules are used
    return list(modules)


setup(ext_modules=extensions())
