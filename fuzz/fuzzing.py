"""Fuzzing Pillion's parsers with atheris (libFuzzer for Python): what is here and how to run it.

Harnesses, one per entry point, each a script taking libFuzzer's options and corpus directories:

    fuzz_request.py    bytes from a client, in one or more reads, into DownstreamConnection.data_received
    fuzz_response.py   bytes from the app, in one or more reads, into UpstreamConnection.data_received
    fuzz_config.py     text into load_config_text, and lines into parse_duration/parse_size/parse_address
    fuzz_cert.py       bytes into pillion.tls.der.read_certificate and check_svid, against cryptography

The first two drive the real listener, router and cluster code over in-memory transports on one uvloop
loop (proxy_world.py, which also holds the checks: responses well-formed, framing refusals close the
connection and forward nothing after them, forwarded requests agree with h11's reading of the input and
are canonical, nothing leaks). A failed check or an exception is a crash; an input over `-timeout`
seconds is a timeout. Either way libFuzzer stops and writes the input to `-artifact_prefix`.

    .venv/bin/python fuzz/fuzz_request.py -max_total_time=60 -timeout=1 -rss_limit_mb=2048 \
        -dict=fuzz/http.dict .fuzz/request fuzz/corpus/request
    .venv/bin/python fuzz/fuzz_request.py .fuzz/artifacts/request-crash-...   # replay one input

The first corpus directory receives what the run learns; fuzz/corpus/<harness> holds the seeds (valid
and invalid messages and configs; also the reproducers of known bugs, so the short run in `make test`
fails until they are fixed). `make fuzz` runs FUZZ_RUNS (1,000,000) inputs per harness, `make test` a
one-minute pass; both need the pure-Python install (`make dev`), since a compiled module is not
instrumented.

libFuzzer reports slow inputs only in whole seconds, so `fuzz()` below also times every input and prints
`slowest input so far` (milliseconds, after a warm-up) each time the record is broken: the last such line
of a run is its slowest input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from time import perf_counter

import atheris

WARM_UP = 200  # the first inputs pay for imports and caches


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    slowest = 0.0
    count = 0

    def timed(data: bytes) -> None:
        nonlocal slowest, count
        start = perf_counter()
        test_one_input(data)
        elapsed = perf_counter() - start
        count += 1
        if elapsed > slowest and count > WARM_UP:
            slowest = elapsed
            print(
                f"slowest input so far: {elapsed * 1000:.1f} ms (input {count}, {len(data)} bytes)",
                file=sys.stderr,
            )

    atheris.Setup(sys.argv, timed)
    atheris.Fuzz()
