"""Fuzz response parsing: bytes from the app, in one or more reads, answering a real request.

    python fuzz/fuzz_response.py -max_total_time=60 -timeout=1 -rss_limit_mb=2048 \\
        .fuzz/response fuzz/corpus/response

An input is a control byte, `control & 3` split offsets (two bytes each) and the bytes the app answers
the first forwarded request with, delivered as one read per piece. `control >> 2 & 7` picks the
client's request(s) from REQUESTS; bit 5 has the app close the connection after its bytes (ending a
close-delimited body). Requests after the first get a plain 200. The checks are proxy_world's: above
all, whatever the app sends, the client gets well-formed responses (or an aborted connection).
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["pillion"]):
    from proxy_world import Answer, Forwarded, World, plain_answer, split_at

from fuzzing import fuzz

REQUESTS = [
    b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n",
    b"HEAD /r HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /r HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /r HTTP/1.0\r\n\r\n",
    b"GET /r HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /r HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"PUT /r HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
]

world = World()


class FuzzedApp:
    """Answers the first request with the fuzzer's bytes, the rest with a plain 200."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.close = False
        self.first = True

    def __call__(self, req: Forwarded) -> Answer:
        if not self.first:
            return plain_answer(req)
        self.first = False
        return Answer(self.pieces, self.close)


def test_one_input(data: bytes) -> None:
    control, pieces = split_at(data)
    app = FuzzedApp()
    app.pieces = pieces
    app.close = bool(control & 0x20)
    world.responder = app
    world.run([REQUESTS[control >> 2 & 7]])


if __name__ == "__main__":
    fuzz(test_one_input)
