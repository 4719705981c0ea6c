"""The Prometheus text exposition of the daemon's metrics (SPEC 1.9, `metrics_port`).

`render(snapshot)` formats data the daemon already has in memory; it does no I/O. The
input, built by the daemon:

    {"host": {"load1", "load5", "load15", "mem_total", "mem_available", "swap_used",
              "cpu_count", "cpu_percent"},
     "daemon": {"pid", "rss"},
     "processes": [jlist records (corral/protocol/jlist.schema.json), each possibly with
                   "processes", "fds", "threads" and "app_metrics" (AppMetrics.snapshot)]}

Every key may be missing and every value null: such a sample is left out (never NaN).
The text is made by prometheus_client from a fresh registry at each call (never the
global default one), so label values are escaped by the library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.samples import Sample

from corral.core.app_metrics import NAME_RE, QUANTILES

LABELS: Final = ("app", "instance")

# (metric name, record key, help); the name of a counter is given without `_total`.
_PROCESS_GAUGES: Final = (
    ("corral_process_cpu_percent", "cpu", "CPU percent of the process tree (100 = one core)."),
    ("corral_process_memory_bytes", "memory", "Resident memory of the process tree in bytes."),
    ("corral_process_processes", "processes", "Processes in the process tree."),
    ("corral_process_open_fds", "fds", "Open file descriptors of the process tree."),
    ("corral_process_threads", "threads", "Threads of the process tree."),
    ("corral_process_uptime_seconds", "uptime", "Seconds the current process has been running."),
)
_PROCESS_COUNTERS: Final = (
    ("corral_process_restarts", "restarts", "Restarts since the app was created or reset."),
    (
        "corral_process_unstable_restarts",
        "unstable_restarts",
        "Restarts after a run shorter than min_uptime.",
    ),
    (
        "corral_process_log_dropped_bytes",
        "log_dropped",
        "Bytes of output lost because the log file could not keep up.",
    ),
)
_HOST_GAUGES: Final = (
    ("corral_host_load1", "load1", "Host load average over 1 minute."),
    ("corral_host_load5", "load5", "Host load average over 5 minutes."),
    ("corral_host_load15", "load15", "Host load average over 15 minutes."),
    ("corral_host_memory_total_bytes", "mem_total", "Host memory in bytes."),
    ("corral_host_memory_available_bytes", "mem_available", "Host memory available in bytes."),
    ("corral_host_swap_used_bytes", "swap_used", "Host swap in use in bytes."),
    ("corral_host_cpus", "cpu_count", "Logical CPUs of the host."),
    ("corral_host_cpu_percent", "cpu_percent", "Host CPU percent (100 = all CPUs busy)."),
)


def _number(value: object) -> float | None:
    """A finite number as float, else None (null, missing, bool, text, NaN, infinities)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _labels(record: Mapping[str, Any]) -> list[str]:
    return [str(record.get("name", "")), str(record.get("instance", ""))]


def _gauge(
    name: str, help_text: str, rows: Iterable[tuple[list[str], object]], labels: Iterable[str]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=list(labels))
    for label_values, value in rows:
        number = _number(value)
        if number is not None:
            family.add_metric(label_values, number)
    return family


def _counter(
    name: str, help_text: str, rows: Iterable[tuple[list[str], object]], labels: Iterable[str]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=list(labels))
    for label_values, value in rows:
        number = _number(value)
        if number is not None:
            family.add_metric(label_values, number)
    return family


def _app_families(name: str, kind: str) -> tuple[Metric, ...]:
    """The (empty) families an app metric of this kind is exposed as."""
    base = f"corral_app_{name}"
    help_text = f"App metric {name} ({kind}), pushed with CORRAL_METRIC."
    labels = list(LABELS)
    if kind == "gauge":
        return (GaugeMetricFamily(base, help_text, labels=labels),)
    if kind == "counter":
        return (CounterMetricFamily(base, help_text, labels=labels),)
    if kind == "meter":
        return (
            GaugeMetricFamily(
                f"{base}_rate", f"App meter {name}: events per second over 60 s.", labels=labels
            ),
            CounterMetricFamily(
                f"{base}_events", f"App meter {name}: events in total.", labels=labels
            ),
        )
    return (SummaryMetricFamily(base, help_text, labels=labels),)


def _series_names(family: Metric) -> set[str]:
    """Every name a family claims in the exposition: its own and its samples'."""
    if family.type == "counter":
        return {family.name, f"{family.name}_total"}
    if family.type == "summary":
        return {family.name, f"{family.name}_count", f"{family.name}_sum"}
    return {family.name}


def _add_app_samples(
    families: tuple[Metric, ...], kind: str, labels: list[str], data: Mapping[str, Any]
) -> None:
    label_map = dict(zip(LABELS, labels, strict=True))

    def add(family: Metric, suffix: str, key: str, extra: Mapping[str, str] | None = None) -> None:
        number = _number(data.get(key))
        if number is not None:
            family.samples.append(
                Sample(family.name + suffix, {**label_map, **(extra or {})}, number)
            )

    if kind in ("gauge", "counter"):
        add(families[0], "_total" if kind == "counter" else "", "value")
    elif kind == "meter":
        add(families[0], "", "rate")
        add(families[1], "_total", "count")
    else:
        summary = families[0]
        for key, q in QUANTILES:
            add(summary, "", key, {"quantile": repr(q)})
        add(summary, "_count", "count")
        add(summary, "_sum", "sum")


class SnapshotCollector:
    """A prometheus_client collector over one snapshot of the daemon's data."""

    def __init__(self, snapshot: Mapping[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        for family in self._families():
            if family.samples:
                yield family

    def _families(self) -> Iterator[Metric]:
        records = [r for r in self.snapshot.get("processes") or () if isinstance(r, Mapping)]
        rows = [(_labels(r), r) for r in records]

        yield _gauge(
            "corral_process_up",
            "1 if the instance is online, else 0.",
            ((labels, 1 if r.get("status") == "online" else 0) for labels, r in rows),
            LABELS,
        )
        for name, key, help_text in _PROCESS_GAUGES:
            yield _gauge(name, help_text, ((labels, r.get(key)) for labels, r in rows), LABELS)
        for name, key, help_text in _PROCESS_COUNTERS:
            yield _counter(name, help_text, ((labels, r.get(key)) for labels, r in rows), LABELS)

        host = _mapping(self.snapshot.get("host"))
        for name, key, help_text in _HOST_GAUGES:
            yield _gauge(name, help_text, [([], host.get(key))], ())
        daemon = _mapping(self.snapshot.get("daemon"))
        yield _gauge(
            "corral_daemon_rss_bytes",
            "Resident memory of the corral daemon in bytes.",
            [([], daemon.get("rss"))],
            (),
        )
        yield from self._app_metrics(rows)

    def _app_metrics(self, rows: list[tuple[list[str], Mapping[str, Any]]]) -> Iterator[Metric]:
        """One family (two for a meter) per app metric name, across all instances. A name
        keeps the first kind seen; a name whose series would clash with an earlier one's
        (gauge `x_rate` and meter `x`, say) is left out."""
        kinds: dict[str, str] = {}
        families: dict[str, tuple[Metric, ...]] = {}
        taken: set[str] = set()
        for labels, record in rows:
            for name, data in _mapping(record.get("app_metrics")).items():
                data = _mapping(data)
                kind = data.get("kind")
                if not (isinstance(name, str) and NAME_RE.match(name)) or kind not in (
                    "gauge",
                    "counter",
                    "meter",
                    "histogram",
                ):
                    continue
                if name not in kinds:
                    kinds[name] = kind
                    candidate = _app_families(name, kind)
                    series = set().union(*(_series_names(f) for f in candidate))
                    if series.isdisjoint(taken):
                        taken |= series
                        families[name] = candidate
                if kinds[name] != kind or name not in families:
                    continue
                _add_app_samples(families[name], kind, labels, data)
        for group in families.values():
            yield from group


def render(snapshot: Mapping[str, Any]) -> bytes:
    """The Prometheus text format (version 0.0.4) for the daemon's data."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


__all__ = ["LABELS", "SnapshotCollector", "render"]
