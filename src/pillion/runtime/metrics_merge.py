"""Metrics merging (`metrics.merge_app`): the app's own Prometheus metrics, fetched from the app at each
scrape of the admin server's `/metrics` and served after Pillion's, so one scrape target covers both
(what Istio does for Envoy and the app). Imported only when configured.

Theory of operation: a scrape GETs `path` from the first endpoint of `cluster` over a fresh connection
(runtime/app_client.py), within `timeout` and at most `MAX_BODY` bytes, asking for the classic text
format Pillion's own output is in. A 200 with a text body is appended to Pillion's exposition as the app
wrote it, but for three things that keep the whole valid: families named `pillion_*` are dropped (two
families of one name invalidate the scrape, and the prefix is Pillion's), a closing OpenMetrics `# EOF`
line goes (the merged text is not OpenMetrics), and the text ends with a newline.

Anything else -- no connection, no answer in time, a status other than 200, too big, not text -- leaves
the app's part out: the scrape still serves Pillion's metrics with 200, since a sidecar's scrape must
never fail because of the app. The failure is counted by reason before Pillion's part is rendered, so
the scrape that lacks the app's metrics says why, and it is logged once per streak, not once per scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pillion.config.model import MergeApp
from pillion.runtime.app_client import FetchError, fetch
from pillion.telemetry.stats import Registry

__all__ = ["FAILURES", "MAX_BODY", "MetricsMerger", "app_part"]

log = logging.getLogger("pillion.metrics")

MAX_BODY = 8 * 1024 * 1024  # a large app exposes a few MiB; past this it is a runaway, not metrics
FAILURES = "pillion_metrics_merge_failures_total"
RESERVED_PREFIX = "pillion_"
# Prometheus client libraries answer in the format asked for; the merged scrape is served as 0.0.4.
ACCEPT = (("accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1"),)
_TEXT_TYPES = ("text/", "application/openmetrics-text")

# The address of a cluster's first endpoint, or None when the cluster is gone or has no endpoint.
Locate = Callable[[str], tuple[str, int] | None]


class MetricsMerger:
    """Fetches the app's metrics for one scrape; see the module docstring."""

    def __init__(self, config: MergeApp, registry: Registry, locate: Locate) -> None:
        self.config = config
        self._locate = locate
        self._failures = registry.counter(
            FAILURES,
            "Scrapes of /metrics served without the app's metrics (metrics.merge_app), by why they could "
            "not be fetched.",
            ("reason",),
        )
        self._failing = False  # in a failure streak: logged at its start and at its end only

    async def app_text(self) -> str:
        """The app's exposition, ready to follow Pillion's; "" when it could not be fetched."""
        try:
            text = await self._fetch()
        except FetchError as exc:
            self._failures.labels(exc.reason).inc()
            if not self._failing:
                self._failing = True
                log.warning(
                    "app metrics left out of /metrics until the app answers",
                    extra={"reason": exc.reason, "error": str(exc)},
                )
            return ""
        if self._failing:
            self._failing = False
            log.info("app metrics merged into /metrics again")
        return text

    async def _fetch(self) -> str:
        config = self.config
        address = self._locate(config.cluster)
        if address is None:
            raise FetchError("connect", f"cluster {config.cluster!r} has no endpoint")
        host, port = address
        answer = await fetch(
            host, port, config.path, float(config.timeout), max_body=MAX_BODY, headers=ACCEPT
        )
        if answer.status != 200:
            raise FetchError("status", f"app answered {answer.status}")
        content_type = answer.headers.get("content-type", "text/plain").strip().lower()
        if not content_type.startswith(_TEXT_TYPES):
            raise FetchError("invalid", f"app answered {content_type!r}, not text")
        try:
            text = answer.body.decode("utf-8")
        except UnicodeDecodeError:
            raise FetchError("invalid", "app's metrics are not UTF-8") from None
        return app_part(text)


def app_part(text: str) -> str:
    """`text` without `pillion_*` families or a closing `# EOF`, ending in a newline ("" when empty)."""
    # Split on "\n" only: str.splitlines would also split inside label values (\x1c, \u2028...).
    lines = [line for line in text.split("\n") if not _metric_name(line).startswith(RESERVED_PREFIX)]
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    if last >= 0 and lines[last].strip() == "# EOF":
        del lines[last:]
    out = "\n".join(lines)
    return out if not out or out.endswith("\n") else out + "\n"


def _metric_name(line: str) -> str:
    """The family a line belongs to: a sample's name, or the name a `# HELP`/`# TYPE`/`# UNIT` line
    describes; "" for other comments and blank lines. A histogram's or summary's series share their
    family's prefix, so matching the prefix catches them too."""
    line = line.lstrip(" \t")
    if line.startswith("#"):
        words = line.split(None, 3)
        return words[2] if len(words) >= 3 and words[1] in ("HELP", "TYPE", "UNIT") else ""
    end = len(line)
    for stop in "{ \t":
        found = line.find(stop)
        if found != -1:
            end = min(end, found)
    return line[:end]
