"""The Runtime: owns every long-lived resource, starts them in order, drains and stops them in reverse.

Start: stats → clusters → listeners (bound) → admin server → housekeeping. Readiness is true once every
listener is bound (and the app's own check passes, if configured), which is what a Kubernetes startup
probe on `/ready` waits for.

Stop (SIGTERM, SIGINT or `POST /quitquitquit`): listeners stop accepting and go to draining, so every
response from then on carries `Connection: close`; idle keep-alive connections close at once; in-flight
requests get `drain_timeout` to finish; then what is left is cut, the admin server closes, the access
log is flushed, and the process exits 0.

The Runtime is also the admin server's target (see `pillion.admin.target.AdminTarget`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from pillion import __version__
from pillion.config import Config, config_to_dict
from pillion.proxy.cluster import Cluster
from pillion.proxy.listener import HttpListener
from pillion.proxy.stats import ProxyStats
from pillion.proxy.tcp import TcpListener, TcpStats
from pillion.runtime.tasks import spawn
from pillion.telemetry.access_log import AccessLog
from pillion.telemetry.process import register_process_metrics
from pillion.telemetry.prometheus import render
from pillion.telemetry.stats import Registry

log = logging.getLogger("pillion.runtime")

# Listeners are used uniformly: start, bound, port, connections (each with a transport), stop_accepting,
# sweep, view.
Listener = HttpListener | TcpListener

HOUSEKEEPING_INTERVAL = 1.0  # seconds between idle/slow-connection sweeps and access-log flushes


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.service = config.service
        self.registry = Registry()
        register_process_metrics(self.registry, __version__)
        self.stats = ProxyStats.declare(self.registry)
        self.access_log = AccessLog(config.access_log.path) if config.access_log.enabled else None
        self.clusters = {c.name: Cluster(c, self.stats) for c in config.clusters}
        self.tcp_stats = TcpStats.declare(self.registry)
        self.listeners: list[Listener] = [
            TcpListener(lc, self.clusters, self.tcp_stats)
            if lc.protocol == "tcp"
            else HttpListener(lc, self.clusters, self.stats, self.access_log)
            for lc in config.listeners
        ]
        self.admin: Any = None
        self.draining = False
        self._stop: asyncio.Event | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        from pillion.admin import start_admin

        self._stop = asyncio.Event()
        for listener in self.listeners:
            await listener.start()
        address = self.config.admin.address
        self.admin = await start_admin(self, address.host, address.port)
        self._housekeeping = spawn(self._housekeep(), name="housekeeping")
        log.info(
            "pillion started",
            extra={
                "service": self.service,
                "version": __version__,
                "admin": f"{address.host}:{self.admin.port}",
            },
        )

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal received, draining", extra={"signal": sig.name})
        self.quit()

    async def serve(self) -> int:
        """Run until asked to stop, then shut down gracefully. Returns the exit code."""
        assert self._stop is not None
        await self._stop.wait()
        await self.shutdown()
        return 0

    def drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("draining: listeners closed, keep-alive connections will close")
        for listener in self.listeners:
            listener.stop_accepting()

    def quit(self) -> None:
        self.drain()
        if self._stop is not None:
            self._stop.set()

    async def shutdown(self) -> None:
        self.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.config.drain_timeout)
        # Polling is deliberate: shutdown happens once, and 50 ms granularity is plenty.
        while self.active_connections() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        left = self.active_connections()
        if left:
            log.warning("drain timeout: closing connections still open", extra={"connections": left})
            for listener in self.listeners:
                for conn in listener.connections.copy():
                    if conn.transport is not None:
                        conn.transport.abort()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        for cluster in self.clusters.values():
            cluster.close_idle()
        if self.admin is not None:
            await self.admin.close()
        if self.access_log is not None:
            self.access_log.close()
        log.info("pillion stopped", extra={"service": self.service})

    def active_connections(self) -> int:
        return sum(len(listener.connections) for listener in self.listeners)

    async def _housekeep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            now = loop.time()
            for listener in self.listeners:
                listener.sweep(now)
            for cluster in self.clusters.values():
                cluster.expire_idle(now)
            if self.access_log is not None:
                self.access_log.flush()

    # -- the admin server's view -------------------------------------------------------------------

    def is_live(self) -> bool:
        return True

    async def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        for listener in self.listeners:
            if not listener.bound:
                return False, f"listener {listener.name} not bound"
        check = self.config.admin.ready_check
        if check is not None:
            from pillion.runtime.ready_check import probe

            endpoint = self.clusters[check.cluster].endpoints[0].address
            ok, reason = await probe(endpoint.host, endpoint.port, check.path, float(check.timeout))
            if not ok:
                return False, f"app not ready: {reason}"
        return True, "ready"

    def metrics_text(self) -> str:
        return render(self.registry)

    def config_dump(self) -> dict[str, Any]:
        return {"version": __version__, "config": config_to_dict(self.config)}

    def clusters_view(self) -> list[dict[str, Any]]:
        return [cluster.view() for cluster in self.clusters.values()]

    def listeners_view(self) -> list[dict[str, Any]]:
        return [listener.view() for listener in self.listeners]
