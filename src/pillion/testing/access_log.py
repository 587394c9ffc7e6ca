"""Reading access logs back in tests: the default text line as a regular expression.

The default `text_format` (config/model.py) is `[START_TIME] "METHOD PATH" RESPONSE_CODE RESPONSE_FLAGS
BYTES_RECEIVED BYTES_SENT DURATION UPSTREAM_DURATION "REQUEST_ID" "UPSTREAM_HOST" LISTENER ROUTE CLUSTER
TRACE_ID ERROR`. Unquoted fields never hold a space; quoted ones are JSON-escaped, so a quote inside
them is always `\\"`. That makes every line parse unambiguously, which is what these tests check.
"""

from __future__ import annotations

import json
import re

__all__ = ["DEFAULT_TEXT_LINE", "parse_text_line"]

_QUOTED = r'(?:[^"\\]|\\.)*'  # the inside of a JSON string
DEFAULT_TEXT_LINE = re.compile(
    rf'\[(?P<ts>\S+)\] "(?P<method>\S+) (?P<path>{_QUOTED})" (?P<status>\d+) (?P<flags>\S+) '
    r"(?P<received>\d+) (?P<sent>\d+) (?P<duration>\d+\.\d{3}) (?P<upstream_duration>\d+\.\d{3}|-) "
    rf'"(?P<request_id>{_QUOTED})" "(?P<upstream>{_QUOTED})" (?P<listener>\S+) (?P<route>\S+) '
    r"(?P<cluster>\S+) (?P<trace_id>\S+) (?P<error>\S+)\Z"
)


def parse_text_line(line: str) -> dict[str, str]:
    """The fields of one default-format line (without its newline), quoted ones unescaped; AssertionError
    if the line does not have that shape."""
    m = DEFAULT_TEXT_LINE.match(line)
    assert m is not None, f"not a default-format access log line: {line!r}"
    fields = m.groupdict()
    for name in ("path", "request_id", "upstream"):
        fields[name] = json.loads(f'"{fields[name]}"')
    return fields
