"""Counters, gauges and histograms, and the Prometheus text format (version 0.0.4). Pure.

Nothing here is a global registry and nothing locks: the server runs on one event
loop thread. Hot paths keep their own plain integers (an engine's ``published``, a
connection's bytes) and a *collector* turns them into ``Family`` values when
``/metrics`` is scraped, so keeping metrics costs an integer add, never a call.

    families = [counter("sse_events_published_total", "Events published.", engine.published)]
    body = encode(families)                               # what GET /metrics answers

A scrape is a list of ``Family`` values, so figures from several processes can be
combined before encoding: ``merge(per_worker)`` labels each sample ``worker="i"``
(gauges and counters alike), which is what a supervisor of ``--workers`` serves;
``sum_families`` adds them instead for figures where the per-worker split is noise.
"""

from __future__ import annotations

import math
import os
import resource
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS_S",
    "STREAM_BUCKETS_S",
    "Family",
    "Histogram",
    "Sample",
    "counter",
    "encode",
    "gauge",
    "merge",
    "process_families",
    "sum_families",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Request durations: a keep-alive GET takes ~30 µs here, a slow handler seconds.
DURATION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Stream lifetimes: a chat answer lasts seconds, a subscription hours.
STREAM_BUCKETS_S = (0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True, frozen=True)
class Sample:
    name: str  # the family's name, or name_bucket / name_sum / name_count
    labels: Labels
    value: float


@dataclass(slots=True, frozen=True)
class Family:
    name: str
    type: str  # counter, gauge, histogram
    help: str
    samples: tuple[Sample, ...]


def counter(name: str, help: str, value: float, labels: Labels = ()) -> Family:
    """A counter family of one sample; ``name`` ends in ``_total``."""
    return Family(name, "counter", help, (Sample(name, labels, value),))


def gauge(name: str, help: str, value: float, labels: Labels = ()) -> Family:
    return Family(name, "gauge", help, (Sample(name, labels, value),))


def labelled(name: str, type: str, help: str, values: Iterable[tuple[Labels, float]]) -> Family:
    """A family with one sample per label set: ``labelled("x_total", "counter", "...", [((("k", "v"),), 3)])``."""
    return Family(name, type, help, tuple(Sample(name, labels, value) for labels, value in values))


class Histogram:
    """Fixed buckets; ``observe`` is a bisect and two adds.

    >>> h = Histogram((0.1, 1.0)); h.observe(0.05); h.observe(0.5); h.observe(7)
    >>> h.counts, h.count
    ([1, 1, 1], 3)
    """

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf only)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le semantics: value <= bound
        self.sum += value
        self.count += 1

    def family(self, name: str, help: str) -> Family:
        samples = []
        cumulative = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            cumulative += n
            le = "+Inf" if math.isinf(bound) else repr(float(bound))  # "1.0", as client libraries write it
            samples.append(Sample(name + "_bucket", (("le", le),), cumulative))
        samples.append(Sample(name + "_sum", (), self.sum))
        samples.append(Sample(name + "_count", (), self.count))
        return Family(name, "histogram", help, tuple(samples))

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self.counts)


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of per-bucket counts (not cumulative), interpolated within
    its bucket as Prometheus' histogram_quantile does; None with no observations."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, n in zip((*bounds, math.inf), counts, strict=True):
        if n and seen + n >= rank:
            if math.isinf(bound):
                return lower  # above the last bound: the best we can say is "at least"
            return lower + (bound - lower) * (rank - seen) / n
        seen += n
        lower = bound
    return lower


# -- the text format ----------------------------------------------------------------------


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def encode(families: Iterable[Family]) -> bytes:
    """The Prometheus text exposition format 0.0.4 of ``families``."""
    out: list[str] = []
    for family in families:
        out.append(f"# HELP {family.name} {_help_text(family.help)}\n# TYPE {family.name} {family.type}\n")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sample.labels)
                out.append(f"{sample.name}{{{labels}}} {_number(sample.value)}\n")
            else:
                out.append(f"{sample.name} {_number(sample.value)}\n")
    return "".join(out).encode("utf-8")


# -- several processes ---------------------------------------------------------------------


def merge(per_worker: Sequence[Sequence[Family]], label: str = "worker") -> list[Family]:
    """One scrape of several workers: every sample gains ``label="<index>"``; families
    keep the order of their first appearance."""
    order: dict[str, Family] = {}
    samples: dict[str, list[Sample]] = {}
    for index, families in enumerate(per_worker):
        tag = (label, str(index))
        for family in families:
            order.setdefault(family.name, family)
            samples.setdefault(family.name, []).extend(
                Sample(s.name, (*s.labels, tag), s.value) for s in family.samples
            )
    return [Family(f.name, f.type, f.help, tuple(samples[f.name])) for f in order.values()]


def sum_families(per_worker: Sequence[Sequence[Family]]) -> list[Family]:
    """One scrape of several workers with samples of the same name and labels added up."""
    order: dict[str, Family] = {}
    totals: dict[str, dict[tuple[str, Labels], float]] = {}
    for families in per_worker:
        for family in families:
            order.setdefault(family.name, family)
            bucket = totals.setdefault(family.name, {})
            for s in family.samples:
                bucket[(s.name, s.labels)] = bucket.get((s.name, s.labels), 0) + s.value
    return [
        Family(f.name, f.type, f.help, tuple(Sample(n, labels, v) for (n, labels), v in totals[f.name].items()))
        for f in order.values()
    ]


# -- process_* (the names every Prometheus client library exports) ----------------------------

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_IMPORTED_AT = time.time()


def _start_time_s() -> float:
    """When this process started, from /proc (Linux); else when this module was imported."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        start_ticks = int(fields[19])  # field 22 of proc(5), counted after "pid (comm)"
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return btime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


_START_TIME_S = _start_time_s()


def process_families() -> list[Family]:
    """CPU seconds, resident and virtual memory, open and maximum descriptors, start time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    families = [
        counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                usage.ru_utime + usage.ru_stime),
    ]
    try:
        with open("/proc/self/statm", "rb") as f:
            size_pages, resident_pages = (int(x) for x in f.read().split()[:2])
        families.append(gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                              size_pages * _PAGE_BYTES))
        families.append(gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                              resident_pages * _PAGE_BYTES))
    except (OSError, ValueError):
        families.append(gauge("process_resident_memory_bytes", "Resident memory size in bytes (peak).",
                              usage.ru_maxrss * 1024))
    try:
        families.append(gauge("process_open_fds", "Number of open file descriptors.",
                              len(os.listdir("/proc/self/fd"))))
    except OSError:
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        families.append(gauge("process_max_fds", "Maximum number of open file descriptors.", soft))
    families.append(gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                          _START_TIME_S))
    return families
