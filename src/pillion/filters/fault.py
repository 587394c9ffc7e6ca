"""Fault injection: which requests of a route to delay, and which to answer with an error.

Theory of operation: each request draws twice from a PRNG, once against the delay share and once
against the abort share, so the two are independent (a request can be both delayed and aborted; the
caller applies the delay first, then the abort, as the config documents). Shares are turned into
fractions once, at config time; a route without a part draws nothing for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from pillion.config.model import Fault
from pillion.telemetry.stats import CounterFamily, Registry

_NO_FAULT: Final = (0.0, 0)


@dataclass(slots=True)
class FaultStats:
    delays: CounterFamily
    aborts: CounterFamily

    @classmethod
    def declare(cls, registry: Registry) -> FaultStats:
        route = ("listener", "route")
        return cls(
            delays=registry.counter(
                "pillion_fault_delays_total", "Requests delayed by fault injection.", route
            ),
            aborts=registry.counter(
                "pillion_fault_aborts_total", "Requests aborted by fault injection.", route
            ),
        )


def _fraction(percent: float) -> float:
    if not percent > 0:  # also NaN
        return 0.0
    return 1.0 if percent >= 100 else percent / 100


class FaultInjector:
    """The fault decisions of one route's `fault`."""

    __slots__ = ("_abort", "_abort_status", "_delay", "_delay_seconds", "_random", "config")

    def __init__(self, config: Fault, rng: random.Random | None = None) -> None:
        self.config = config
        delay, abort = config.delay, config.abort
        self._delay = _fraction(delay.percent) if delay is not None else 0.0
        self._delay_seconds = max(0.0, float(delay.duration)) if delay is not None else 0.0
        self._abort = _fraction(abort.percent) if abort is not None else 0.0
        self._abort_status = abort.status if abort is not None else 0
        self._random = (rng if rng is not None else random.Random()).random

    def decide(self) -> tuple[float, int]:
        """(seconds to delay this request or 0.0, status to abort it with or 0)."""
        delay, abort = self._delay, self._abort
        if not delay and not abort:
            return _NO_FAULT
        rand = self._random
        # random() < 1.0 always, so a share of 1.0 always fires and 0.0 never does.
        return (
            self._delay_seconds if delay and rand() < delay else 0.0,
            self._abort_status if abort and rand() < abort else 0,
        )
