"""docs/configuration.md, rendered from the model: `python -m pillion.config.docs > docs/configuration.md`.

Theory of operation: a fixed introduction (an example, the notations, the `${VAR}` rules and the checks
`pillion validate` makes) followed by one section per record class, in the order a reader meets them
walking the file from the top, each with a key / type / default / description table built from the same
type hints and field docs as the loader and the schema. A unit test compares the committed file with this
rendering, so the reference cannot go stale.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pillion.config.dump import to_data
from pillion.config.introspect import (
    Field,
    default,
    doc,
    is_record,
    is_required,
    literal_of,
    optional_of,
    record_fields,
    short_form_of,
    tuple_of,
)
from pillion.config.model import Address, Config, Duration, Size

EXAMPLE = """\
service: orders                  # this workload's name: used in metrics, traces, identity
admin: {address: 127.0.0.1:9901}
listeners:
  - name: inbound
    address: 0.0.0.0:15006
    protocol: http
    routes:
      - match: {prefix: /}
        cluster: app
clusters:
  - name: app
    endpoints: [127.0.0.1:8080]
    connect_timeout: 1s
"""

INTRO = f"""\
# Configuration reference

<!-- Generated from src/pillion/config/model.py; regenerate with
     `python -m pillion.config.docs > docs/configuration.md`. Do not edit by hand. -->

Pillion reads one YAML file. `pillion validate -c FILE` checks it and lists every problem it finds;
`pillion schema` prints its JSON Schema, for editors (`pillion schema > pillion.schema.json`, then put
`# yaml-language-server: $schema=pillion.schema.json` at the top of the file). A complete, working
example (also in `examples/pillion.yaml`; `examples/outbound.yaml` shows routing, retries, splits,
circuit breaking, outlier detection, health checks, rate limits, faults and a TCP listener):

```yaml
{EXAMPLE}```

## Notation

- **Durations** are seconds: `100us`, `250ms`, `2s`, `1.5s`, `1m`, `1h`, or a bare number of seconds.
- **Sizes** are bytes: `512`, `64KiB`, `1MiB`, `1GiB` (powers of 1024), or `10kB`, `1MB`, `1GB` (powers
  of 1000). `KB` is refused as ambiguous.
- **Addresses** are `host:port`: `127.0.0.1:8080`, `localhost:8080`, `[::1]:8080` (IPv6 in brackets).
  Port `0` picks any free port, which is useful in tests.
- **Booleans** are `true` and `false` only (YAML 1.2): `yes`, `no`, `on` and `off` are plain strings,
  so `retries: {{on: [5xx]}}` means what it says.
- **Endpoints** are an address (`10.0.0.5:8080`, weight 1) or `{{address: ..., weight: N}}`.
- Negative durations, sizes and counts are refused.

## Environment variables

After the YAML is parsed, every string value (never a key) has references substituted, so a variable's
value is only ever text and cannot change the file's structure:

- `${{NAME}}` is the variable's value. An unset variable is an error naming where it is used, e.g.
  `listeners[0].address: environment variable 'PORT' is not set`.
- `${{NAME:-default}}` gives `default` when the variable is unset or empty.
- `$$` is a literal `$`. A `$` followed by anything else is kept as is.

A value that came from a variable may also fill an integer or boolean key, since variables are always
text: `max_idle_connections: ${{POOL_SIZE:-128}}`.

## Checks

Unknown keys (with a did-you-mean), missing required keys and wrong types are errors, as are:

- a listener, cluster or route name used twice (route names within their listener);
- names other than letters, digits, `.`, `-`, `_` (starting and ending with a letter or digit, at most
  63 characters), for `service` and for listener, cluster and route names;
- a `cluster` reference (in a route, `admin.ready_check` or `metrics.merge_app`) to a cluster that does
  not exist;
- a cluster without endpoints, or with a `connect_timeout` of `0`;
- a route match with both `prefix` and `path`, or a `prefix`/`path` not starting with `/`;
- two sockets (listeners, admin) on the same port and host, or a wildcard host (`0.0.0.0`, `::`) on a
  port another socket uses.

Every error reads `<path>: <problem>`, e.g. `listeners[0].routes[1].cluster: unknown cluster 'paymnts';
did you mean 'payments'?`. The admin server's `/config_dump` shows the effective configuration, defaults
included, in this same notation, so a dump is itself a valid configuration file.

## Reference
"""


def render() -> str:
    """The whole of docs/configuration.md."""
    sections: dict[type[Any], list[str]] = {}
    _collect(Config, "", sections)
    return INTRO + "".join(_section(cls, paths) for cls, paths in sections.items())


def _collect(cls: type[Any], path: str, sections: dict[type[Any], list[str]]) -> None:
    """Record classes in reading order, each with the key paths where it appears."""
    sections.setdefault(cls, []).append(path)
    for f, hint in record_fields(cls):
        target, suffix = _unwrap(hint)
        if is_record(target):
            _collect(target, f"{path}.{f.name}{suffix}" if path else f"{f.name}{suffix}", sections)


def _unwrap(hint: Any) -> tuple[Any, str]:
    """The record type inside `hint`, with `[]` appended to the path for lists."""
    inner = optional_of(hint)
    if inner is not None:
        return _unwrap(inner)
    element = tuple_of(hint)
    if element is not None:
        return element, "[]"
    return hint, ""


def _section(cls: type[Any], paths: list[str]) -> str:
    where = "" if paths == [""] else " At " + ", ".join(f"`{p}`" for p in paths) + "."
    rows = [
        f"| `{f.name}` | {_type_name(hint)} | {_default(f, hint)} | {_cell(doc(f))} |"
        for f, hint in record_fields(cls)
    ]
    return (
        f"\n### {cls.__name__}\n\n{(cls.__doc__ or '').strip()}{where}\n\n"
        "| Key | Type | Default | Description |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _type_name(hint: Any) -> str:
    inner = optional_of(hint)
    if inner is not None:
        return f"{_type_name(inner)} or null"
    element = tuple_of(hint)
    if element is not None:
        return f"list of {_type_name(element)}"
    choices = literal_of(hint)
    if choices is not None:
        return "one of " + ", ".join(f"`{c}`" for c in choices)
    if is_record(hint):
        link = f"[{hint.__name__}](#{hint.__name__.lower()})"
        short = short_form_of(hint)
        if short is not None:
            short_type = next(h for f, h in record_fields(hint) if f.name == short)
            return f"{_type_name(short_type)} or {link}"
        return link
    names = {
        Duration: "duration",
        Size: "size",
        Address: "address",
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
    }
    if hint not in names:
        raise TypeError(f"unsupported type {hint!r} in the config model")
    return names[hint]


def _default(f: Field, hint: Any) -> str:
    if is_required(f):
        return "**required**"
    value = to_data(hint, default(f))
    if isinstance(value, dict):
        return "its defaults"
    if isinstance(value, str) and value:
        return f"`{value}`"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    sys.stdout.write(render())
