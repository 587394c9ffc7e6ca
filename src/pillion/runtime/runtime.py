"""The Runtime: owns every long-lived resource, starts them in order, drains and stops them in reverse.

Start: stats → clusters → listeners (bound) → admin server → housekeeping and the overload watch (the
process-wide connection count and memory limit every listener consults, runtime/overload.py).
Readiness is true once every listener is bound (and the app's own check passes, if configured), which
is what a Kubernetes startup probe on `/ready` waits for.

Stop (SIGTERM, SIGINT or `POST /quitquitquit`): listeners stop accepting and go to draining, so every
response from then on carries `Connection: close`; idle keep-alive connections close at once; in-flight
requests get `drain_timeout` to finish; then what is left is cut, the admin server closes, the access
log is flushed, and the process exits 0.

The Runtime is also the admin server's target (see `pillion.admin.target.AdminTarget`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pillion import __version__
from pillion.config import Config, config_to_dict
from pillion.config.dump import to_data
from pillion.config.model import Cluster as ClusterConfig
from pillion.config.model import ClusterTls, ListenerTls
from pillion.config.model import Listener as ListenerConfig
from pillion.proxy.cluster import Cluster
from pillion.proxy.listener import HttpListener
from pillion.proxy.stats import ProxyStats
from pillion.runtime.overload import Overload
from pillion.runtime.tasks import spawn
from pillion.telemetry.access_log import AccessLog
from pillion.telemetry.loop_lag import LoopLag
from pillion.telemetry.process import register_process_metrics
from pillion.telemetry.prometheus import render
from pillion.telemetry.stats import Registry
from pillion.tls.loading import reload_refusal

if TYPE_CHECKING:
    from pillion.proxy.tcp import TcpListener, TcpStats
    from pillion.runtime.metrics_merge import MetricsMerger
    from pillion.telemetry.otlp import OtlpExporter
    from pillion.telemetry.tracer import Tracer
    from pillion.tls.termination import DownstreamTls
    from pillion.tls.workload import WorkloadIdentity

    # Listeners are used uniformly: start, bound, port, connections, prepare, stop_accepting, sweep,
    # view. tcp.py is imported only when a tcp listener is configured.
    Listener = HttpListener | TcpListener

log = logging.getLogger("pillion.runtime")


def _is_ip(host: str) -> bool:
    """An IP literal (no DNS needed), checked without importing the DNS module."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.split("%", 1)[0])
        except OSError:
            continue
        return True
    return False


def _mtime(path: str | None) -> float:
    if path is None:
        return 0.0
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


HOUSEKEEPING_INTERVAL = 1.0  # seconds between idle/slow-connection sweeps and access-log flushes


class Runtime:
    def __init__(self, config: Config, path: str | None = None) -> None:
        self.config = config
        self.config_path = path  # where SIGHUP reloads from; None when built in memory (tests, demo)
        self.config_version = 1
        self._config_mtime = _mtime(path)
        self.service = config.service
        self.registry = Registry()
        self.metrics_enabled = config.metrics.enabled  # fixed for the process, like the access log
        register_process_metrics(self.registry, __version__)
        self.loop_lag = LoopLag(self.registry)
        self.stats = ProxyStats.declare(self.registry)
        self.access_log = AccessLog.from_config(config.access_log) if config.access_log.enabled else None
        self.overload = Overload(config.overload, self.registry)
        self.identity = self._load_identity(config)
        self.exporter = self._make_exporter(config)
        self.merger = self._make_merger(config)
        reloads = self.registry.counter("pillion_config_reloads_total", "Configurations applied by a reload.")
        self.reloads = reloads.labels()
        failures = self.registry.counter(
            "pillion_config_reload_failures_total", "Reloads refused (the old configuration stays in force)."
        )
        self.reload_failures = failures.labels()
        self._reload_lock = asyncio.Lock()
        self._helper_stats: dict[str, Any] = {}  # health-check and DNS stats, declared on first use
        self.retired: list[Listener] = []  # replaced by a reload, finishing their connections
        self.clusters = {c.name: self._new_cluster(c) for c in config.clusters}
        self._tcp_stats: TcpStats | None = None
        self.listeners: list[Listener] = [self._make_listener(lc, self.clusters) for lc in config.listeners]
        self.admin: Any = None
        self.draining = False
        self._stop: asyncio.Event | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        from pillion.admin import start_admin

        self._stop = asyncio.Event()
        for cluster in self.clusters.values():
            await self._start_cluster(cluster)
        for listener in self.listeners:
            await listener.start()
        address = self.config.admin.address
        self.admin = await start_admin(self, address.host, address.port)
        self._housekeeping = spawn(self._housekeep(), name="housekeeping")
        self.overload.start()
        self.loop_lag.start()
        if self.exporter is not None:
            self.exporter.start()
        if self.identity is not None:
            self.identity.start()
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
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        # SIGUSR1: logrotate moved the access log (postrotate); ignored, rather than fatal, without one.
        loop.add_signal_handler(signal.SIGUSR1, self.access_log.reopen if self.access_log else lambda: None)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal received, draining", extra={"signal": sig.name})
        self.quit()

    async def stopped(self) -> None:
        """Return once the Runtime has been asked to stop."""
        assert self._stop is not None
        await self._stop.wait()

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
        log.info("draining: inbound listeners closed, keep-alive connections will close")
        for listener in self.listeners:
            if listener.config.direction == "outbound":
                listener.start_draining()  # the app may still be finishing its work: keep serving it
            else:
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
        for listener in self.listeners:
            listener.stop_accepting()  # outbound ones too, now
        left = self.active_connections()
        if left:
            log.warning("drain timeout: closing connections still open", extra={"connections": left})
            for listener in (*self.listeners, *self.retired):
                for conn in listener.connections.copy():
                    if conn.transport is not None:
                        conn.transport.abort()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        await self.overload.stop()
        await self.loop_lag.stop()
        if self.exporter is not None:
            await self.exporter.stop(deadline=2.0)  # the spans of the last requests, if the collector is up
        if self.identity is not None:
            await self.identity.stop()
        for cluster in self.clusters.values():
            cluster.retire()
        if self.admin is not None:
            await self.admin.close()
        if self.access_log is not None:
            self.access_log.close()
        log.info("pillion stopped", extra={"service": self.service})

    def active_connections(self) -> int:
        return sum(len(listener.connections) for listener in (*self.listeners, *self.retired))

    async def _housekeep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            now = loop.time()
            for listener in (*self.listeners, *self.retired):
                listener.sweep(now)
            self.retired = [r for r in self.retired if r.connections]
            if self.config.watch and self.config_path is not None:
                mtime = _mtime(self.config_path)
                if mtime != self._config_mtime:
                    self._config_mtime = mtime
                    self.request_reload()
            for cluster in self.clusters.values():
                cluster.tick(now)
            if self.access_log is not None:
                self.access_log.flush()

    # -- clusters' background helpers ---------------------------------------------------------------

    def _stats_of(self, kind: str) -> Any:
        stats = self._helper_stats.get(kind)
        if stats is None:
            if kind == "dns":
                from pillion.proxy.dns import DnsStats

                stats = DnsStats.declare(self.registry)
            else:
                from pillion.proxy.health_check import HealthStats

                stats = HealthStats.declare(self.registry)
            self._helper_stats[kind] = stats
        return stats

    async def _start_cluster(self, cluster: Cluster) -> None:
        """Resolve host names (and keep re-resolving them) and start health checks, as configured."""
        config = cluster.config
        names = [(e.address.host, e.address.port, e.weight) for e in config.endpoints]
        if not all(_is_ip(host) for host, _, _ in names):
            from pillion.proxy.dns import DnsRefresher

            refresher = DnsRefresher(
                cluster.name, names, float(config.dns_refresh), cluster.set_endpoints, self._stats_of("dns")
            )
            cluster.set_endpoints(await refresher.first())
            refresher.start()
            cluster.helpers.append(refresher)
        if config.health_check is not None:
            from pillion.proxy.health_check import HealthChecker

            checker = HealthChecker(cluster, config.health_check, self._stats_of("health"), self.service)
            checker.start()
            cluster.helpers.append(checker)

    # -- reload -----------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP (or a changed file with `watch`): re-read the config file and apply it."""
        if self.config_path is None:
            log.warning("reload asked for, but the config was not read from a file")
            return
        spawn(self.reload(), name="reload")

    async def reload(self, config: Config | None = None) -> bool:
        """Apply the config file (or `config`) without dropping a request. An invalid one is refused,
        logged and counted, and the running config stays in force."""
        async with self._reload_lock:
            if config is None:
                from pillion.config import ConfigError, load_config

                assert self.config_path is not None
                try:
                    config = load_config(self.config_path)
                except ConfigError as exc:
                    self.reload_failures.value += 1
                    log.error("reload refused: invalid configuration", extra={"errors": exc.errors})
                    return False
            refusal = reload_refusal(config)
            if refusal is not None:
                self.reload_failures.value += 1
                log.error("reload refused", extra={"errors": [refusal]})
                return False
            try:
                await self._apply(config)
            except Exception as exc:
                self.reload_failures.value += 1
                log.exception("reload failed; the previous configuration stays", extra={"error": str(exc)})
                return False
            self.reloads.value += 1
            log.info("configuration reloaded", extra={"version": self.config_version})
            return True

    def _make_listener(self, lc: ListenerConfig, clusters: dict[str, Cluster]) -> Listener:
        if lc.protocol == "tcp":
            from pillion.proxy.tcp import TcpListener, TcpStats

            if self._tcp_stats is None:
                self._tcp_stats = TcpStats.declare(self.registry, self.stats.tls_failures)
            return TcpListener(
                lc, clusters, self._tcp_stats, overload=self.overload, tls=self._listener_tls(lc)
            )
        return HttpListener(
            lc,
            clusters,
            self.stats,
            self.access_log,
            overload=self.overload,
            tls=self._listener_tls(lc),
            tracer=self._tracer(lc),
            metrics=self.metrics_enabled,
        )

    # -- tracing: loaded only when configured ----------------------------------------------------------

    def _make_exporter(self, config: Config) -> OtlpExporter | None:
        if config.tracing is None:
            return None
        try:
            from pillion.telemetry.otlp import OtlpExporter
        except ImportError:
            raise RuntimeError(
                "tracing: the OTLP exporter needs opentelemetry-proto: pip install 'pillion[tracing]'"
            ) from None

        return OtlpExporter(config.tracing.otlp_endpoint, config.service, self.registry)

    def _tracer(self, lc: ListenerConfig) -> Tracer | None:
        tracing = self.config.tracing
        if tracing is None or self.exporter is None:
            return None
        from pillion.telemetry.tracer import Sampler, Tracer

        return Tracer(Sampler(tracing.sampling), self.exporter, outbound=lc.direction == "outbound")

    # -- metrics merging: loaded only when configured ---------------------------------------------------

    def _make_merger(self, config: Config) -> MetricsMerger | None:
        # Fixed for the process, like `metrics.enabled`; the app's address is looked up at each scrape.
        merge = config.metrics.merge_app
        if merge is None or not config.metrics.enabled:
            return None
        from pillion.runtime.metrics_merge import MetricsMerger

        return MetricsMerger(merge, self.registry, self.app_address)

    def app_address(self, cluster: str) -> tuple[str, int] | None:
        """Where the app is: the first endpoint of `cluster`; None if the cluster is gone (a reload) or
        has no endpoint (a DNS name that resolves to nothing)."""
        found = self.clusters.get(cluster)
        if found is None or not found.endpoints:
            return None
        endpoint = found.endpoints[0]
        return endpoint.host, endpoint.port

    # -- TLS: loaded only when configured --------------------------------------------------------------

    def _load_identity(self, config: Config) -> WorkloadIdentity | None:
        if config.identity is None:
            return None
        from pillion.tls.workload import WorkloadIdentity

        return WorkloadIdentity(config.identity, self.registry)

    def _listener_tls(self, lc: ListenerConfig) -> DownstreamTls | None:
        if lc.tls.mode == "off":
            return None
        from pillion.tls.termination import DownstreamTls

        mux = lc.protocol == "http" and lc.tls.mode in ("strict", "permissive")
        gauge = self.stats.mux_connections.labels(lc.name, "") if mux else None
        return DownstreamTls(lc.tls, self.identity, mux_connections=gauge)

    def _new_cluster(self, cc: ClusterConfig) -> Cluster:
        cluster = Cluster(cc, self.stats)
        if cc.tls.mode != "off":
            from pillion.tls.origination import UpstreamTls

            mux = cc.tls.mode == "mesh" and cc.tls.multiplex
            gauge = self.stats.mux_connections.labels("", cc.name) if mux else None
            cluster.tls = UpstreamTls(cc.tls, self.identity, gauge)
        return cluster

    async def _apply(self, new: Config) -> None:
        if (
            new.admin != self.config.admin
            or new.access_log != self.config.access_log
            or new.metrics != self.config.metrics
            or new.identity != self.config.identity
            or new.tracing != self.config.tracing
        ):
            log.warning(
                "admin, access_log, metrics, identity and tracing changes take effect at the next restart"
            )
        # 1. Build everything new without touching what serves now.
        clusters: dict[str, Cluster] = {}
        fresh: list[Cluster] = []
        for cc in new.clusters:
            old = self.clusters.get(cc.name)
            if old is not None and old.config == cc:
                clusters[cc.name] = old  # unchanged: health, ejections and pools carry on
            else:
                clusters[cc.name] = self._new_cluster(cc)
                fresh.append(clusters[cc.name])
        current = {listener.name: listener for listener in self.listeners}
        listeners: list[Listener] = []
        commits: list[Callable[[], None]] = []  # kept listeners' new routes, compiled, not yet in force
        bind: list[Listener] = []
        for lc in new.listeners:
            old_listener = current.get(lc.name)
            if (
                old_listener is not None
                and old_listener.config.address == lc.address
                and old_listener.config.protocol == lc.protocol
                and old_listener.config.tls == lc.tls  # (a socket's TLS is set when it binds)
            ):
                commits.append(old_listener.prepare(lc, clusters))
                listeners.append(old_listener)
                del current[lc.name]
            else:
                listener = self._make_listener(lc, clusters)
                bind.append(listener)
                listeners.append(listener)
        # 2. Side effects, undone if any fails: helpers of new clusters, sockets of new listeners.
        # A new listener on the address of one going away (renamed, or a protocol change) can only
        # bind once the old one has closed its socket, so those are bound last.
        held = {gone.config.address for gone in current.values()}
        bind.sort(key=lambda listener: listener.config.address in held)
        try:
            for cluster in fresh:
                await self._start_cluster(cluster)
            for listener in bind:
                for gone in current.values():
                    if gone.config.address == listener.config.address:
                        gone.stop_accepting()
                await listener.start()
        except BaseException:
            for listener in bind:
                listener.stop_accepting()
            for cluster in fresh:
                cluster.retire()
            raise
        # 3. Switch: kept listeners take the new routes for their next request; the rest drain.
        for commit in commits:
            commit()
        for gone in current.values():
            gone.stop_accepting()
            self.retired.append(gone)
        for name, cluster in self.clusters.items():
            if clusters.get(name) is not cluster:
                cluster.retire()
        self.clusters = clusters
        self.listeners = listeners
        self.overload.update(new.overload)
        self.overload.start()
        self.config = new
        self.config_version += 1

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

            address = self.app_address(check.cluster)
            if address is None:
                return False, f"app not ready: cluster {check.cluster} has no endpoint"
            ok, reason = await probe(*address, check.path, float(check.timeout))
            if not ok:
                return False, f"app not ready: {reason}"
        return True, "ready"

    def metrics_text(self) -> str:
        return render(self.registry)

    async def metrics_text_merged(self) -> str:
        if self.merger is None:
            return self.metrics_text()
        app = await self.merger.app_text()  # first: a failure to fetch it is counted in this scrape
        return self.metrics_text() + app

    def config_dump(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "config_version": self.config_version,
            "config": config_to_dict(self.config),
        }

    def clusters_view(self) -> list[dict[str, Any]]:
        return [cluster.view() for cluster in self.clusters.values()]

    def listeners_view(self) -> list[dict[str, Any]]:
        return [listener.view() for listener in self.listeners]

    def certs_view(self) -> dict[str, Any]:
        return {
            "identity": self.identity.view() if self.identity is not None else None,
            "listeners": {lc.name: to_data(ListenerTls, lc.tls) for lc in self.config.listeners},
            "clusters": {cc.name: to_data(ClusterTls, cc.tls) for cc in self.config.clusters},
        }
