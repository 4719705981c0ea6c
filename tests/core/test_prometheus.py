"""The Prometheus text exposition, read back with prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from corral.core.app_metrics import AppMetrics
from corral.core.prometheus import render

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: bytes) -> tuple[dict[str, str], Samples]:
    """({family name: type}, {(sample name, sorted labels): value})."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        assert family.name not in types, f"family {family.name} twice"
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"sample {key} twice"
            samples[key] = sample.value
    return types, samples


def inst(app: str, instance: int, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"app": app, "instance": str(instance), **extra}.items()))


def record(name: str, instance: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1,
        "id": 0,
        "name": name,
        "instance": instance,
        "pid": 4242,
        "status": "online",
        "restarts": 0,
        "unstable_restarts": 0,
        "uptime": 12.5,
        "cpu": 3.25,
        "memory": 52_428_800,
        "log_dropped": 0,
    }
    base.update(fields)
    return base


HOST = {
    "load1": 0.5,
    "load5": 0.25,
    "load15": 0.125,
    "mem_total": 25_769_803_776,
    "mem_available": 20_000_000_000,
    "swap_used": 0,
    "cpu_count": 2,
    "cpu_percent": 37.5,
}


def test_process_host_and_daemon_metrics() -> None:
    snapshot = {
        "host": HOST,
        "daemon": {"pid": 99, "rss": 31_457_280},
        "processes": [
            record("web", 0, processes=3, fds=17, threads=9, restarts=4, unstable_restarts=1),
            record("web", 1, status="errored", pid=None, log_dropped=2048, uptime=None),
        ],
    }
    types, samples = parse(render(snapshot))
    assert types == {
        "corral_process_up": "gauge",
        "corral_process_cpu_percent": "gauge",
        "corral_process_memory_bytes": "gauge",
        "corral_process_processes": "gauge",
        "corral_process_open_fds": "gauge",
        "corral_process_threads": "gauge",
        "corral_process_uptime_seconds": "gauge",
        "corral_process_restarts": "counter",
        "corral_process_unstable_restarts": "counter",
        "corral_process_log_dropped_bytes": "counter",
        "corral_host_load1": "gauge",
        "corral_host_load5": "gauge",
        "corral_host_load15": "gauge",
        "corral_host_memory_total_bytes": "gauge",
        "corral_host_memory_available_bytes": "gauge",
        "corral_host_swap_used_bytes": "gauge",
        "corral_host_cpus": "gauge",
        "corral_host_cpu_percent": "gauge",
        "corral_daemon_rss_bytes": "gauge",
    }
    w0, w1 = inst("web", 0), inst("web", 1)
    assert samples[("corral_process_up", w0)] == 1.0
    assert samples[("corral_process_up", w1)] == 0.0
    assert samples[("corral_process_cpu_percent", w0)] == 3.25
    assert samples[("corral_process_memory_bytes", w0)] == 52_428_800
    assert samples[("corral_process_processes", w0)] == 3
    assert samples[("corral_process_open_fds", w0)] == 17
    assert samples[("corral_process_threads", w0)] == 9
    assert samples[("corral_process_uptime_seconds", w0)] == 12.5
    assert samples[("corral_process_restarts_total", w0)] == 4
    assert samples[("corral_process_unstable_restarts_total", w0)] == 1
    assert samples[("corral_process_log_dropped_bytes_total", w1)] == 2048
    assert samples[("corral_host_load1", ())] == 0.5
    assert samples[("corral_host_load15", ())] == 0.125
    assert samples[("corral_host_memory_total_bytes", ())] == 25_769_803_776
    assert samples[("corral_host_memory_available_bytes", ())] == 20_000_000_000
    assert samples[("corral_host_swap_used_bytes", ())] == 0
    assert samples[("corral_host_cpus", ())] == 2
    assert samples[("corral_host_cpu_percent", ())] == 37.5
    assert samples[("corral_daemon_rss_bytes", ())] == 31_457_280
    # no NaN and no sample for the null uptime nor for absent processes/fds/threads
    assert ("corral_process_uptime_seconds", w1) not in samples
    assert ("corral_process_open_fds", w1) not in samples


def test_nulls_are_left_out_never_nan() -> None:
    snapshot = {
        "host": dict.fromkeys(HOST),
        "daemon": {"pid": 1, "rss": None},
        "processes": [
            record(
                "idle",
                0,
                status="stopped",
                cpu=None,
                memory=None,
                uptime=None,
                processes=None,
                fds=None,
                threads=None,
                log_dropped=None,
                app_metrics={
                    "g": {"kind": "gauge", "value": None},
                    "h": {
                        "kind": "histogram",
                        "count": 2,
                        "sum": 3.0,
                        "min": None,
                        "max": None,
                        "p50": None,
                        "p95": None,
                        "p99": None,
                    },
                },
            )
        ],
    }
    text = render(snapshot)
    assert b"NaN" not in text and b"nan" not in text.lower()
    types, samples = parse(text)
    # a family with no sample at all is not written either
    assert sorted(types) == [
        "corral_app_h",
        "corral_process_restarts",
        "corral_process_unstable_restarts",
        "corral_process_up",
    ]
    assert samples == {
        ("corral_process_up", inst("idle", 0)): 0.0,
        ("corral_process_restarts_total", inst("idle", 0)): 0.0,
        ("corral_process_unstable_restarts_total", inst("idle", 0)): 0.0,
        ("corral_app_h_count", inst("idle", 0)): 2.0,
        ("corral_app_h_sum", inst("idle", 0)): 3.0,
    }


def test_empty_and_odd_input() -> None:
    assert render({}) == b""
    assert render({"host": None, "daemon": None, "processes": None}) == b""
    odd = {
        "host": {"load1": "high", "load5": True, "load15": float("nan"), "cpu_count": 2},
        "processes": [
            "not a record",
            record("x", 0, cpu=float("inf"), app_metrics={"bad name": {"kind": "gauge"}}),
            record("y", 0, app_metrics=["not", "a", "mapping"]),
            record("z", 0, app_metrics={"t": {"kind": "timer", "value": 1}, "u": "x"}),
        ],
    }
    text = render(odd)
    assert b"NaN" not in text and b"Inf" not in text
    types, samples = parse(text)
    assert samples[("corral_host_cpus", ())] == 2
    assert "corral_host_load1" not in types and "corral_host_load5" not in types
    assert ("corral_process_cpu_percent", inst("x", 0)) not in samples
    assert not any(name.startswith("corral_app_") for name in types)


def test_app_metrics_from_a_real_snapshot() -> None:
    pushed = AppMetrics()
    for spec in (
        "gauge:queue_depth=12",
        "counter:requests=3",
        "counter:requests=4",
        "meter:jobs=30",
        *(f"histogram:latency_ms={v}" for v in range(1, 101)),
    ):
        assert pushed.apply(spec, 1000.0) is None
    other = AppMetrics()
    assert other.apply("gauge:queue_depth=1", 1000.0) is None
    snapshot = {
        "processes": [
            record("api", 0, app_metrics=pushed.snapshot(1000.5)),
            record("api", 1, app_metrics=other.snapshot(1000.5)),
            record("worker", 0),
        ]
    }
    types, samples = parse(render(snapshot))
    a0, a1 = inst("api", 0), inst("api", 1)
    assert types["corral_app_queue_depth"] == "gauge"
    assert types["corral_app_requests"] == "counter"
    assert types["corral_app_jobs_rate"] == "gauge"
    assert types["corral_app_jobs_events"] == "counter"
    assert types["corral_app_latency_ms"] == "summary"
    assert samples[("corral_app_queue_depth", a0)] == 12
    assert samples[("corral_app_queue_depth", a1)] == 1
    assert samples[("corral_app_requests_total", a0)] == 7
    assert samples[("corral_app_jobs_rate", a0)] == 30.0  # 30 events within the first second
    assert samples[("corral_app_jobs_events_total", a0)] == 30
    assert samples[("corral_app_latency_ms", inst("api", 0, quantile="0.5"))] == 50
    assert samples[("corral_app_latency_ms", inst("api", 0, quantile="0.95"))] == 95
    assert samples[("corral_app_latency_ms", inst("api", 0, quantile="0.99"))] == 99
    assert samples[("corral_app_latency_ms_count", a0)] == 100
    assert samples[("corral_app_latency_ms_sum", a0)] == 5050
    # worker pushed nothing: no app series for it
    assert not any(
        name.startswith("corral_app_") and dict(labels)["app"] == "worker"
        for name, labels in samples
    )


def test_a_name_keeps_the_first_kind_seen_across_instances() -> None:
    snapshot = {
        "processes": [
            record("a", 0, app_metrics={"jobs": {"kind": "counter", "value": 5}}),
            record("a", 1, app_metrics={"jobs": {"kind": "gauge", "value": 9}}),
            record("b", 0, app_metrics={"jobs": {"kind": "counter", "value": 2}}),
        ]
    }
    types, samples = parse(render(snapshot))
    assert types["corral_app_jobs"] == "counter"
    app_samples = {k: v for k, v in samples.items() if k[0].startswith("corral_app_")}
    assert app_samples == {
        ("corral_app_jobs_total", inst("a", 0)): 5,
        ("corral_app_jobs_total", inst("b", 0)): 2,
    }


def test_names_whose_series_would_clash_are_left_out() -> None:
    snapshot = {
        "processes": [
            record(
                "a",
                0,
                app_metrics={
                    "hits": {"kind": "meter", "rate": 2.0, "count": 120.0},
                    "hits_rate": {"kind": "gauge", "value": 1.0},  # corral_app_hits_rate
                    "lat": {
                        "kind": "histogram",
                        "count": 1,
                        "sum": 2.0,
                        "min": 2.0,
                        "max": 2.0,
                        "p50": 2.0,
                        "p95": 2.0,
                        "p99": 2.0,
                    },
                    "lat_count": {"kind": "gauge", "value": 5.0},  # corral_app_lat_count
                    "x_total": {"kind": "counter", "value": 1.0},  # family corral_app_x
                    "x": {"kind": "gauge", "value": 1.0},
                },
            )
        ]
    }
    types, samples = parse(render(snapshot))  # parse() fails on a family or sample twice
    app = {name for name in types if name.startswith("corral_app_")}
    assert app == {
        "corral_app_hits_rate",
        "corral_app_hits_events",
        "corral_app_lat",
        "corral_app_x",
    }
    assert types["corral_app_x"] == "counter"
    assert samples[("corral_app_hits_rate", inst("a", 0))] == 2.0
    assert samples[("corral_app_lat_count", inst("a", 0))] == 1.0
    assert samples[("corral_app_x_total", inst("a", 0))] == 1.0


def test_odd_label_values_are_escaped() -> None:
    names = ["api:v2.eu-west", 'quote"back\\slash', "new\nline", "ünï"]
    snapshot = {
        "processes": [
            record(name, i, app_metrics={"g": {"kind": "gauge", "value": i}})
            for i, name in enumerate(names)
        ]
    }
    text = render(snapshot)
    assert b'app="api:v2.eu-west"' in text
    assert b'app="quote\\"back\\\\slash"' in text
    assert b'app="new\\nline"' in text
    _, samples = parse(text)
    for i, name in enumerate(names):
        assert samples[("corral_process_up", inst(name, i))] == 1.0
        assert samples[("corral_app_g", inst(name, i))] == i


def test_the_global_registry_is_left_alone() -> None:
    before = set(REGISTRY._names_to_collectors)
    render({"processes": [record("web", 0)], "host": HOST})
    assert set(REGISTRY._names_to_collectors) == before
    assert b"python_gc" not in render({"host": HOST})
    assert b"process_cpu_seconds" not in render({"host": HOST})
