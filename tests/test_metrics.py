"""The metrics primitives and the Prometheus text format, read back by a real Prometheus parser."""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sse_server.metrics import (
    Family,
    Histogram,
    counter,
    encode,
    gauge,
    labelled,
    merge,
    process_families,
    quantile,
    sum_families,
)


def parsed(families: list[Family]) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """family name -> {(sample name, sorted labels): value}, as prometheus_client reads our text."""
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(encode(families).decode()):
        out[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return out


def test_counters_gauges_and_labels_parse_back_with_their_values() -> None:
    """Each family reads back with its type, labels and value; label values with quotes, backslashes
    and newlines survive the escaping."""
    families = [
        counter("sse_events_published_total", "Events published.", 7),
        gauge("sse_connections", "Open connections.", 3),
        labelled("http_requests_total", "counter", "Requests.\nBy status.", [
            ((("method", "GET"), ("status", "404")), 2),
            ((("method", 'a"b\\c\nd'), ("status", "200")), 1),
        ]),
    ]
    text = encode(families).decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types == {"sse_events_published": "counter", "sse_connections": "gauge", "http_requests": "counter"}
    values = parsed(families)
    assert values["sse_events_published"] == {("sse_events_published_total", ()): 7}
    assert values["sse_connections"] == {("sse_connections", ()): 3}
    assert values["http_requests"][("http_requests_total", (("method", "GET"), ("status", "404")))] == 2
    assert values["http_requests"][("http_requests_total", (("method", 'a"b\\c\nd'), ("status", "200")))] == 1


def test_histogram_buckets_are_cumulative_with_le_semantics() -> None:
    """An observation equal to a bound falls in that bound's bucket; buckets, sum and count parse back."""
    h = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        h.observe(value)
    values = parsed([h.family("http_request_duration_seconds", "Durations.")])["http_request_duration_seconds"]
    assert values[("http_request_duration_seconds_bucket", (("le", "0.1"),))] == 2
    assert values[("http_request_duration_seconds_bucket", (("le", "1.0"),))] == 3
    assert values[("http_request_duration_seconds_bucket", (("le", "+Inf"),))] == 4
    assert values[("http_request_duration_seconds_count", ())] == 4
    assert values[("http_request_duration_seconds_sum", ())] == pytest.approx(3.65)


@pytest.mark.parametrize(("counts", "q", "expected"), [
    ([0, 0, 0], 0.99, None),  # nothing observed
    ([10, 0, 0], 0.5, 0.05),  # halfway through the first bucket (0..0.1)
    ([0, 100, 0], 0.99, 0.1 + 0.9 * 0.99),  # within 0.1..1
    ([0, 0, 5], 0.99, 1.0),  # above every bound: the last bound
])
def test_quantile_interpolates_within_its_bucket(counts: list[int], q: float, expected: float | None) -> None:
    """The p99 the status page shows is interpolated as Prometheus' histogram_quantile does."""
    got = quantile((0.1, 1.0), counts, q)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_workers_merge_labelled_or_summed() -> None:
    """Several workers' scrapes become one: every worker's sample labelled, or the samples added up."""
    one = [counter("sse_events_published_total", "Events.", 2), gauge("sse_connections", "Open.", 5)]
    two = [counter("sse_events_published_total", "Events.", 3), gauge("sse_connections", "Open.", 1)]
    labelled_values = parsed(merge([one, two]))
    assert labelled_values["sse_events_published"] == {
        ("sse_events_published_total", (("worker", "0"),)): 2,
        ("sse_events_published_total", (("worker", "1"),)): 3,
    }
    summed = parsed(sum_families([one, two]))
    assert summed["sse_connections"] == {("sse_connections", ()): 6}
    assert summed["sse_events_published"] == {("sse_events_published_total", ()): 5}


def test_process_families_describe_this_process() -> None:
    """process_* has CPU seconds, resident memory, open and max descriptors and a plausible start time."""
    values = parsed(process_families())
    assert values["process_cpu_seconds"][("process_cpu_seconds_total", ())] > 0
    assert values["process_resident_memory_bytes"][("process_resident_memory_bytes", ())] > 1024 * 1024
    if os.path.isdir("/proc/self/fd"):
        assert values["process_open_fds"][("process_open_fds", ())] >= 3
    assert values["process_max_fds"][("process_max_fds", ())] >= 64
    start = values["process_start_time_seconds"][("process_start_time_seconds", ())]
    assert 1e9 < start <= time.time()
