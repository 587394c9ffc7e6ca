"""Process-wide load shedding: Envoy's overload manager, reduced to the two resources a sidecar runs out of.

Theory of operation. Every listener asks `admit()` for each connection it accepts and reports `released()`
when one closes, so the count of client connections across listeners is exact and the limit is checked
at no cost beyond an integer compare. Memory is sampled: a worker reads the resident set size every
`check_interval` and sets `shedding` at `max_memory`, clearing it below 95% of it (the gap keeps the
state from flapping at the edge). While shedding, new connections are closed unread and each new request
gets 503 `overloaded`; requests already going carry on, so shedding never loses a request in flight.
Both actions are counted, and `pillion_overload_active` shows the state.
"""

from __future__ import annotations

import asyncio
import logging

from pillion.config.model import Overload as OverloadConfig
from pillion.runtime.tasks import Worker
from pillion.telemetry.process import resident_bytes
from pillion.telemetry.stats import Registry

log = logging.getLogger("pillion.overload")

RECOVER_FRACTION = 0.95  # shedding for memory stops below this share of max_memory


class Overload:
    def __init__(self, config: OverloadConfig, registry: Registry) -> None:
        self.connections = 0  # client connections open, across every listener
        self.shedding = False  # memory over the limit: refuse new connections and requests
        shed = registry.counter(
            "pillion_overload_shed_total",
            "Work refused to stay within the overload limits: connections closed on accept (`connection`, "
            "for memory or max_connections) and requests answered 503 `overloaded` (`request`).",
            ("action",),
        )
        self.shed_connections = shed.labels("connection")
        self.shed_requests = shed.labels("request")
        active = registry.gauge(
            "pillion_overload_active", "1 while resident memory is over overload.max_memory.", ("resource",)
        )
        self.memory_active = active.labels("memory")
        self._worker = Worker(self._watch, name="overload")
        self.update(config)

    def update(self, config: OverloadConfig) -> None:
        """Apply a (reloaded) config; the memory worker runs only while max_memory is set."""
        self.config = config
        self.max_connections = config.max_connections
        self.max_memory = int(config.max_memory)
        if not self.max_memory:
            self._set_shedding(False)

    def start(self) -> None:
        if self.max_memory:
            self._worker.start()

    async def stop(self) -> None:
        self._worker.stop()
        await self._worker.wait_closed()

    def admit(self) -> bool:
        """Count a newly accepted client connection in; False (counted) when it must be closed."""
        if self.shedding or (self.max_connections and self.connections >= self.max_connections):
            self.shed_connections.value += 1
            return False
        self.connections += 1
        return True

    def released(self) -> None:
        self.connections -= 1

    def check(self) -> None:
        """Compare resident memory with the limit once (the worker calls this every check_interval)."""
        limit = self.max_memory
        if not limit:
            return
        rss = resident_bytes()
        if self.shedding:
            if rss < limit * RECOVER_FRACTION:
                self._set_shedding(False)
        elif rss >= limit:
            self._set_shedding(True)

    def _set_shedding(self, on: bool) -> None:
        if on == self.shedding:
            return
        self.shedding = on
        self.memory_active.set(1 if on else 0)
        if on:
            log.warning("overloaded: shedding new connections and requests", extra={"limit": self.max_memory})
        else:
            log.info("no longer overloaded: accepting again")

    async def _watch(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(float(self.config.check_interval))
