"""Fuzz request parsing: bytes from a client, in one or more reads, through a real listener.

    python fuzz/fuzz_request.py -max_total_time=60 -timeout=1 -rss_limit_mb=2048 \\
        .fuzz/request fuzz/corpus/request

An input is a control byte, `control & 3` split offsets (two bytes each) and the bytes the client sends,
delivered as one read per piece; `control >> 2 & 3` picks how the app frames its answers (length,
chunked, close-delimited, 204). See proxy_world for the proxy under test and the checks; a failed
check is an uncaught exception, which libFuzzer reports as a crash with the input saved.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["pillion"]):
    from proxy_world import STYLES, Responder, World, plain_answer, split_at

from fuzzing import fuzz

world = World()


def answer_in(style: int) -> Responder:
    return lambda req: plain_answer(req, style)


RESPONDERS = [answer_in(style) for style in range(STYLES)]


def test_one_input(data: bytes) -> None:
    control, pieces = split_at(data)
    world.responder = RESPONDERS[(control >> 2) % STYLES]
    world.run(pieces)


if __name__ == "__main__":
    fuzz(test_one_input)
