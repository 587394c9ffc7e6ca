"""Reading a sidecar's metrics in tests: the sum of a metric's samples whose labels include some values.

`metric(rt, ...)` reads the Runtime's exposition in-process; `admin_metric(rt, ...)` goes through the
admin server's `GET /metrics`, as Prometheus would.
"""

from __future__ import annotations

from typing import Any, Protocol


class HasMetrics(Protocol):
    def metrics_text(self) -> str: ...


class HasAdmin(Protocol):
    @property
    def admin(self) -> Any: ...  # the admin server, with its bound `port`


def sample_sum(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (all of them when none are given)."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def metric(rt: HasMetrics, name: str, **labels: str) -> float:
    return sample_sum(rt.metrics_text(), name, **labels)


async def admin_metric(rt: HasAdmin, name: str, **labels: str) -> float:
    from pillion.testing.http import http_request

    reply = await http_request("127.0.0.1", rt.admin.port, "GET", "/metrics")
    assert reply.status == 200, reply
    return sample_sum(reply.text, name, **labels)
