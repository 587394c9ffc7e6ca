"""docs/metrics.md is the current rendering of the registry, and every family and label is placed."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pillion.telemetry.catalogue import (
    AREAS,
    OTHER_AREA,
    UNDOCUMENTED,
    MetricInfo,
    area_of,
    catalogue,
    render,
)

DOCS = Path(__file__).parents[2] / "docs" / "metrics.md"


@cache
def _catalogue() -> tuple[MetricInfo, ...]:
    return tuple(catalogue())


@cache
def _render() -> str:
    return render()


def test_committed_docs_are_up_to_date() -> None:
    assert DOCS.read_text() == _render(), (
        "docs/metrics.md is stale; regenerate it with "
        "`.venv/bin/python -m pillion.telemetry.catalogue > docs/metrics.md`"
    )


def test_every_family_has_an_area() -> None:
    lost = [m.name for m in _catalogue() if area_of(m.name) == OTHER_AREA]
    assert not lost, f"add these to an area in pillion.telemetry.catalogue.AREAS: {lost}"
    assert f"\n## {OTHER_AREA}\n" not in _render()


def test_every_label_is_explained() -> None:
    assert UNDOCUMENTED not in _render(), "add the label to pillion.telemetry.catalogue.LABELS"


def test_every_area_is_used() -> None:
    used = {area_of(m.name) for m in _catalogue()}
    assert used == {title for title, _, _ in AREAS}


def test_lazily_declared_families_are_forced_into_the_catalogue() -> None:
    """The families only a feature (or a started cluster) declares are there, marked as such."""
    by_name = {m.name: m for m in _catalogue()}
    for name in (
        "pillion_dns_refreshes_total",  # a DNS refresher, declared when its cluster starts
        "pillion_health_checks_total",  # a health checker, likewise
        "pillion_rate_limited_total",
        "pillion_fault_aborts_total",
        "pillion_authz_denied_total",
        "pillion_tcp_connections_total",
        "pillion_tls_cert_expiry_seconds",
    ):
        assert not by_name[name].always, name
    for name in ("pillion_http_requests_total", "pillion_event_loop_lag_seconds", "pillion_process_open_fds"):
        assert by_name[name].always, name
    assert len(by_name) == len(_catalogue()), "a family listed twice"


def test_table_rows_match_the_families() -> None:
    text = _render()
    for m in _catalogue():
        assert f"| `{m.name}` | " in text
    assert f"\n{len(_catalogue())} metric families in all.\n" in text
