"""The metrics one instance pushes over its notify socket (SPEC 1.9, docs/NOTIFY.md).

An app sends `CORRAL_METRIC=<kind>:<name>=<value>`; the daemon hands the part after
`CORRAL_METRIC=` to `AppMetrics.apply`. Four kinds, as in PM2 and Dropwizard:

- gauge: the last value;
- counter: a running total of increments (>= 0);
- meter: events (increments >= 0), reported as a rate per second over the last 60 s and
  the total count;
- histogram: observations, reported as the total count and sum since the instance's
  metrics were last reset, and min, max, p50, p95 and p99 over the last 1024 observations.

Memory is bounded whatever the app sends: at most `max_names` names, a meter is a ring of
60 per-second buckets, a histogram a ring of 1024 floats. Nothing here blocks or raises on
bad input; `apply` returns an error text for the daemon to log (rate-limited there).
"""

from __future__ import annotations

import math
import re
from array import array
from typing import Final

KINDS: Final = ("gauge", "counter", "meter", "histogram")
NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
METER_WINDOW: Final = 60
"""Seconds over which a meter's rate is computed (one bucket per second)."""
RESERVOIR_SIZE: Final = 1024
"""How many of a histogram's latest observations its min, max and quantiles cover."""
QUANTILES: Final = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

_SHOWN: Final = 40  # characters of a bad input quoted back in an error text


def _quote(text: str) -> str:
    if len(text) > _SHOWN:
        text = text[:_SHOWN] + "..."
    return repr(text)


class _Gauge:
    kind: Final = "gauge"
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def add(self, value: float, now: float) -> str | None:
        self.value = value
        return None

    def snapshot(self, now: float) -> dict[str, float | str]:
        return {"kind": self.kind, "value": self.value}


class _Counter:
    kind: Final = "counter"
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def add(self, value: float, now: float) -> str | None:
        total = self.value + value
        if not math.isfinite(total):
            return "counter total would overflow"
        self.value = total
        return None

    def snapshot(self, now: float) -> dict[str, float | str]:
        return {"kind": self.kind, "value": self.value}


class _Meter:
    """A ring of METER_WINDOW one-second buckets; slot `s % METER_WINDOW` holds second `s`."""

    kind: Final = "meter"
    __slots__ = ("count", "first", "seconds", "sums")

    def __init__(self) -> None:
        self.count = 0.0
        self.first: float | None = None  # when the first event came, to rate a young meter
        self.sums = array("d", bytes(8 * METER_WINDOW))
        self.seconds = array("q", [-1] * METER_WINDOW)

    def add(self, value: float, now: float) -> str | None:
        second = math.floor(now)
        slot = second % METER_WINDOW
        bucket = self.sums[slot] + value if self.seconds[slot] == second else value
        total = self.count + value
        if not (math.isfinite(total) and math.isfinite(bucket)):
            return "meter count would overflow"
        self.sums[slot] = bucket
        self.seconds[slot] = second
        self.count = total
        if self.first is None:
            self.first = now
        return None

    def rate(self, now: float) -> float:
        """Events per second over the last METER_WINDOW seconds (the current one included),
        or since the first event when that is more recent (at least over 1 s)."""
        if self.first is None:
            return 0.0
        second = math.floor(now)
        oldest = second - METER_WINDOW + 1
        events = math.fsum(
            self.sums[i]
            for i in range(METER_WINDOW)
            if oldest <= self.seconds[i] <= second  # a clock going back keeps newer ones out
        )
        span = min(float(METER_WINDOW), max(1.0, now - self.first))
        return events / span

    def snapshot(self, now: float) -> dict[str, float | str]:
        return {"kind": self.kind, "rate": self.rate(now), "count": self.count}


class _Histogram:
    """Total count and sum, and a ring of the last RESERVOIR_SIZE observations."""

    kind: Final = "histogram"
    __slots__ = ("count", "next", "reservoir", "sorted", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.reservoir = array("d")
        self.next = 0  # the slot the next observation overwrites, once the ring is full
        self.sorted: list[float] | None = None  # cache for snapshot, dropped on each add

    def add(self, value: float, now: float) -> str | None:
        total = self.sum + value
        if not math.isfinite(total):
            return "histogram sum would overflow"
        self.sum = total
        self.count += 1
        if len(self.reservoir) < RESERVOIR_SIZE:
            self.reservoir.append(value)
        else:
            self.reservoir[self.next] = value
            self.next = (self.next + 1) % RESERVOIR_SIZE
        self.sorted = None
        return None

    def snapshot(self, now: float) -> dict[str, float | str]:
        if self.sorted is None:
            self.sorted = sorted(self.reservoir)
        values = self.sorted
        snap: dict[str, float | str] = {
            "kind": self.kind,
            "count": self.count,
            "sum": self.sum,
            "min": values[0],
            "max": values[-1],
        }
        for key, q in QUANTILES:
            snap[key] = quantile(values, q)
        return snap


def quantile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank quantile: the smallest value with at least q of the values at or
    below it (a value that was really observed). `sorted_values` must not be empty."""
    rank = math.ceil(q * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


_Metric = _Gauge | _Counter | _Meter | _Histogram
_FACTORIES: Final[dict[str, type[_Metric]]] = {
    "gauge": _Gauge,
    "counter": _Counter,
    "meter": _Meter,
    "histogram": _Histogram,
}


class AppMetrics:
    """The metrics one instance pushed, keyed by name. Not thread-safe: the event loop's."""

    def __init__(self, max_names: int = 100) -> None:
        if max_names < 0:
            raise ValueError("max_names must be >= 0")
        self.max_names = max_names
        self._metrics: dict[str, _Metric] = {}

    def __len__(self) -> int:
        return len(self._metrics)

    def apply(self, spec: str, now: float) -> str | None:
        """Apply one `kind:name=value` (the value of a CORRAL_METRIC= key). None when it
        was taken, else why not (the metrics are then unchanged). Never raises."""
        kind, colon, rest = spec.partition(":")
        name, equals, text = rest.partition("=")
        if not colon or not equals:
            return f"expected <kind>:<name>=<value>, got {_quote(spec)}"
        kind = kind.strip()
        name = name.strip()
        if kind not in _FACTORIES:
            return f"unknown metric kind {_quote(kind)} (expected one of {', '.join(KINDS)})"
        if not NAME_RE.match(name):
            return (
                f"invalid metric name {_quote(name)} (expected a letter or _ then up to 63"
                " letters, digits or _)"
            )
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return f"metric {name}: value {_quote(text.strip())} is not a finite number"
        if value < 0 and kind in ("counter", "meter"):
            return f"metric {name}: a {kind} increment must be >= 0, not {value!r}"
        metric = self._metrics.get(name)
        if metric is None:
            if len(self._metrics) >= self.max_names:
                return f"metric {name} refused: already {self.max_names} metric names (the limit)"
            metric = _FACTORIES[kind]()
            error = metric.add(value, now)
            if error is None:
                self._metrics[name] = metric
        elif metric.kind != kind:
            return f"metric {name} is a {metric.kind}: a {kind} value is refused"
        else:
            error = metric.add(value, now)
        return None if error is None else f"metric {name}: {error}"

    def snapshot(self, now: float) -> dict[str, dict[str, float | str]]:
        """Every metric's current state, JSON-serialisable (all numbers are finite floats):
        gauge and counter `{kind, value}`, meter `{kind, rate, count}`, histogram
        `{kind, count, sum, min, max, p50, p95, p99}`."""
        return {name: metric.snapshot(now) for name, metric in self._metrics.items()}

    def reset(self) -> None:
        """Forget every metric (names and values)."""
        self._metrics.clear()
