"""AppMetrics: parsing CORRAL_METRIC values, the four kinds, bounds and errors."""

from __future__ import annotations

import json
import random

import pytest

from corral.core.app_metrics import RESERVOIR_SIZE, AppMetrics, quantile


def applied(metrics: AppMetrics, *specs: str, now: float = 1000.0) -> None:
    for spec in specs:
        assert metrics.apply(spec, now) is None, spec


def test_gauge_keeps_the_last_value() -> None:
    m = AppMetrics()
    applied(m, "gauge:queue=3", "gauge:queue=12.5", "gauge:queue=-4")
    assert m.snapshot(1000.0) == {"queue": {"kind": "gauge", "value": -4.0}}


def test_counter_sums_increments() -> None:
    m = AppMetrics()
    applied(m, "counter:requests=1", "counter:requests=2.5", "counter:requests=0")
    assert m.snapshot(1000.0) == {"requests": {"kind": "counter", "value": 3.5}}


def test_meter_rate_over_the_last_60_seconds() -> None:
    m = AppMetrics()
    # 10 events per second for two minutes, at t = 100 ... 219
    for t in range(100, 220):
        applied(m, "meter:hits=10", now=t + 0.25)
    snap = m.snapshot(219.5)["hits"]
    assert snap == {"kind": "meter", "rate": 10.0, "count": 1200.0}
    # 30 s of silence: 30 of the 60 buckets still hold events
    assert m.snapshot(249.5)["hits"]["rate"] == pytest.approx(300 / 60)
    # a minute of silence: nothing left in the window, the count stays
    assert m.snapshot(279.5)["hits"] == {"kind": "meter", "rate": 0.0, "count": 1200.0}
    # events again reuse the ring's slots
    applied(m, "meter:hits=6", now=500.0)
    assert m.snapshot(500.5)["hits"]["count"] == 1206.0


def test_meter_rate_of_a_young_meter_is_over_its_age() -> None:
    m = AppMetrics()
    for t in range(10):
        applied(m, "meter:hits=5", now=1000.0 + t)
    # 50 events over the 10 s since the first one, not over 60 s
    assert m.snapshot(1010.0)["hits"]["rate"] == pytest.approx(5.0)
    # and at least over one second
    m2 = AppMetrics()
    applied(m2, "meter:hits=3", now=1000.0)
    assert m2.snapshot(1000.1)["hits"]["rate"] == pytest.approx(3.0)


def test_meter_ignores_buckets_from_the_future_when_the_clock_goes_back() -> None:
    m = AppMetrics()
    applied(m, "meter:hits=8", now=2000.0)
    assert m.snapshot(1990.0)["hits"]["rate"] == 0.0
    assert m.snapshot(1990.0)["hits"]["count"] == 8.0


def test_histogram_quantiles_against_sorted_data() -> None:
    m = AppMetrics()
    values = list(range(1, 101))
    random.Random(7).shuffle(values)
    applied(m, *(f"histogram:latency={v}" for v in values))
    assert m.snapshot(1000.0)["latency"] == {
        "kind": "histogram",
        "count": 100,
        "sum": 5050.0,
        "min": 1.0,
        "max": 100.0,
        "p50": 50.0,
        "p95": 95.0,
        "p99": 99.0,
    }


def test_histogram_quantiles_match_nearest_rank_on_random_data() -> None:
    rng = random.Random(42)
    data = [rng.uniform(-50, 1000) for _ in range(777)]
    m = AppMetrics()
    applied(m, *(f"histogram:x={v!r}" for v in data))
    snap = m.snapshot(0.0)["x"]
    ordered = sorted(data)
    n = len(ordered)
    for key, percent in (("p50", 50), ("p95", 95), ("p99", 99)):
        rank = -(-percent * n // 100)  # ceil(percent * n / 100), exactly
        assert snap[key] == ordered[rank - 1]
        q = percent / 100
        # the nearest-rank definition: at least q of the data at or below it
        value = snap[key]
        assert isinstance(value, float)
        assert sum(v <= value for v in data) >= q * n
        assert sum(v < value for v in data) < q * n
    assert snap["min"] == ordered[0] and snap["max"] == ordered[-1]


def test_histogram_reservoir_keeps_the_last_1024_observations() -> None:
    m = AppMetrics()
    applied(m, *(f"histogram:x={v}" for v in range(3000)))
    snap = m.snapshot(0.0)["x"]
    recent = sorted(range(3000 - RESERVOIR_SIZE, 3000))
    assert snap["count"] == 3000
    assert snap["sum"] == float(sum(range(3000)))  # all observations
    assert snap["min"] == recent[0] and snap["max"] == recent[-1]  # the reservoir's
    assert snap["p50"] == quantile([float(v) for v in recent], 0.5)
    # a new observation invalidates the cached sort
    applied(m, "histogram:x=-1")
    assert m.snapshot(0.0)["x"]["min"] == -1.0


def test_quantile_edges() -> None:
    assert quantile([4.0], 0.5) == 4.0
    assert quantile([1.0, 2.0], 0.5) == 1.0
    assert quantile([1.0, 2.0], 0.99) == 2.0
    assert quantile([1.0, 2.0, 3.0], 0.0) == 1.0


def test_names_are_bounded() -> None:
    m = AppMetrics(max_names=3)
    applied(m, "gauge:a=1", "counter:b=1", "meter:c=1")
    error = m.apply("gauge:d=1", 0.0)
    assert error is not None and "limit" in error and "d" in error
    assert sorted(m.snapshot(0.0)) == ["a", "b", "c"]
    # known names still update
    applied(m, "gauge:a=2")
    assert m.snapshot(0.0)["a"]["value"] == 2.0
    assert len(m) == 3


def test_a_refused_first_value_does_not_take_a_name() -> None:
    m = AppMetrics(max_names=1)
    assert m.apply("counter:a=-1", 0.0) is not None
    applied(m, "gauge:b=1")
    assert list(m.snapshot(0.0)) == ["b"]


def test_memory_stays_bounded_under_a_flood() -> None:
    m = AppMetrics()
    for i in range(10_000):
        m.apply(f"gauge:g{i}=1", 0.0)
        m.apply(f"histogram:h=1.5e{i % 300}", float(i))
        m.apply(f"meter:m={i}", float(i))
    assert len(m) == 100
    snap = m.snapshot(10_000.0)
    assert snap["h"]["count"] == 10_000
    json.dumps(snap, allow_nan=False)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "expected <kind>:<name>=<value>"),
        ("gauge", "expected <kind>:<name>=<value>"),
        ("gauge:queue", "expected <kind>:<name>=<value>"),
        ("queue=3", "expected <kind>:<name>=<value>"),
        ("timer:queue=3", "unknown metric kind 'timer'"),
        ("gauge:=3", "invalid metric name ''"),
        ("gauge:9lives=3", "invalid metric name '9lives'"),
        ("gauge:queue.depth=3", "invalid metric name 'queue.depth'"),
        ("gauge:a:b=3", "invalid metric name 'a:b'"),
        ("gauge:" + "x" * 65 + "=1", "invalid metric name"),
        ("gauge:queue=", "is not a finite number"),
        ("gauge:queue=three", "value 'three' is not a finite number"),
        ("gauge:queue=nan", "is not a finite number"),
        ("gauge:queue=inf", "is not a finite number"),
        ("gauge:queue=-Infinity", "is not a finite number"),
        ("gauge:queue=1e999", "is not a finite number"),
        ("counter:requests=-1", "a counter increment must be >= 0"),
        ("meter:hits=-0.5", "a meter increment must be >= 0"),
    ],
)
def test_bad_input_is_refused_with_a_message(spec: str, words: str) -> None:
    m = AppMetrics()
    error = m.apply(spec, 0.0)
    assert error is not None and words in error, error
    assert m.snapshot(0.0) == {}


def test_names_up_to_64_characters_and_negative_histogram_values() -> None:
    m = AppMetrics()
    name = "_" + "a9" * 31 + "Z"
    assert len(name) == 64
    applied(m, f"gauge:{name}=1", "histogram:delta=-3", "gauge:x= 2 ")
    snap = m.snapshot(0.0)
    assert snap[name]["value"] == 1.0 and snap["delta"]["min"] == -3.0
    assert snap["x"]["value"] == 2.0


def test_error_texts_quote_long_input_shortly() -> None:
    error = AppMetrics().apply("gauge:q=" + "z" * 10_000, 0.0)
    assert error is not None and len(error) < 200


def test_a_name_keeps_its_first_kind() -> None:
    m = AppMetrics()
    applied(m, "counter:jobs=1")
    error = m.apply("gauge:jobs=5", 0.0)
    assert error == "metric jobs is a counter: a gauge value is refused"
    applied(m, "counter:jobs=1")
    assert m.snapshot(0.0) == {"jobs": {"kind": "counter", "value": 2.0}}


def test_overflow_is_refused_and_the_total_kept() -> None:
    m = AppMetrics()
    applied(m, "counter:big=1e308", "histogram:h=1e308", "meter:m=1e308")
    for spec in ("counter:big=1e308", "histogram:h=1e308", "meter:m=1e308"):
        error = m.apply(spec, 1000.0)
        assert error is not None and "overflow" in error
    snap = m.snapshot(1000.0)
    assert snap["big"]["value"] == 1e308
    assert snap["h"]["count"] == 1 and snap["h"]["sum"] == 1e308
    assert snap["m"]["count"] == 1e308
    json.dumps(snap, allow_nan=False)


def test_snapshot_is_json_and_reset_forgets_everything() -> None:
    m = AppMetrics()
    applied(m, "gauge:g=1", "counter:c=2", "meter:m=3", "histogram:h=4")
    snap = m.snapshot(1000.5)
    assert json.loads(json.dumps(snap, allow_nan=False)) == snap
    assert {name: s["kind"] for name, s in snap.items()} == {
        "g": "gauge",
        "c": "counter",
        "m": "meter",
        "h": "histogram",
    }
    assert set(snap["m"]) == {"kind", "rate", "count"}
    assert set(snap["h"]) == {"kind", "count", "sum", "min", "max", "p50", "p95", "p99"}
    m.reset()
    assert m.snapshot(1000.5) == {} and len(m) == 0
    applied(m, "gauge:c=1")  # a name's kind is forgotten too
    assert m.snapshot(0.0)["c"]["kind"] == "gauge"


def test_apply_never_raises_on_odd_text() -> None:
    m = AppMetrics()
    rng = random.Random(1)
    alphabet = "gaucoterminhs:=.-+eE0123456789_ \x00\ufffd"
    for _ in range(2000):
        spec = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        result = m.apply(spec, 0.0)
        assert result is None or isinstance(result, str)
    json.dumps(m.snapshot(0.0), allow_nan=False)


def test_max_names_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        AppMetrics(max_names=-1)
    assert AppMetrics(max_names=0).apply("gauge:a=1", 0.0) is not None
