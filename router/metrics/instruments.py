"""The daemon's Prometheus instruments: one private ``CollectorRegistry`` and what the hot paths
update in it.

Each part that counts asks once for a handle (``function``, ``source``, ``http``), so an update
costs no label lookup. The figures of every invocation and every request are plain numbers on
those handles (``Counts``), which ``Metrics.collect`` turns into counter and histogram families at
each scrape: the daemon counts on its one event-loop thread, and prometheus-client's own children
take a lock and half a dozen calls per update (an increment 0.9 µs, an observation 1.8 µs, a plain
one 0.2 µs; see the README's "The metrics' cost"). Sources, whose events come a batch at a time, use
prometheus-client's instruments as they are. Live state (queues, workers, the async backlog) is
not counted at all: ``router.metrics.state`` reads it at each scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from router.intake.invocation import Outcome, Status

# A counter's ``_created`` series doubles the scrape, and no dashboard reads it. The switch is
# the library's, process-wide; the daemon is the only user of the library in its process.
disable_created_metrics()

STATUSES: tuple[Status, ...] = ("success", "error", "timeout", "crash", "oom", "throttled")
# Seconds, from a warm no-op (well under a millisecond) to Lambda's 15-minute limit.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)
# A forked worker is ready in milliseconds; an import-heavy one in seconds; init stops at 10 s.
INIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A request answered by the daemon itself takes tens of microseconds; an invoke, its function's time.
HTTP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# Messages in a batch (SQS's batch_size goes to 10,000) or events in one claim of the store.
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Counts:
    """A histogram's observations: a count per bucket (the last is +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # The first bound >= value: Prometheus' buckets are "less than or equal".
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """The buckets as Prometheus writes them: each ``le`` with the count at or below it."""
        out, running = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            out.append((floatToGoString(bound), running))
        return out


class FunctionMetrics:
    """One function's counts, updated by its pool as invocations finish and workers init (its
    errors and throttles are read from the outcomes at a scrape)."""

    __slots__ = ("outcomes", "cold_starts", "duration", "init")

    def __init__(self) -> None:
        self.outcomes = dict.fromkeys(STATUSES, 0)
        self.cold_starts = 0
        self.duration = Counts(DURATION_BUCKETS)
        self.init = Counts(INIT_BUCKETS)

    def ran(self, outcome: Outcome, cold: bool) -> None:
        """An invocation that was not throttled ended, whatever else its outcome."""
        self.outcomes[outcome.status] += 1
        self.duration.observe(outcome.duration_ms / 1000)
        if cold:
            self.cold_starts += 1

    def throttled(self) -> None:
        self.outcomes["throttled"] += 1

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.outcomes.items() if status not in ("success", "throttled"))

    @property
    def throttles(self) -> int:
        return self.outcomes["throttled"]

    def initialized(self, init_ms: float) -> None:
        """A worker's init ended, ready or failed."""
        self.init.observe(init_ms / 1000)


class SourceMetrics:
    """One source's figures for one function: a mapping's pollers, a schedule, the async runner."""

    __slots__ = ("_lag", "_batch", "_errors")

    def __init__(self, metrics: Metrics, source: str, function: str) -> None:
        self._lag = metrics.source_lag.labels(source, function)
        self._batch = metrics.source_batch.labels(source, function)
        self._errors = metrics.source_errors.labels(source, function)

    def lag(self, seconds: float) -> None:
        self._lag.set(max(0.0, seconds))

    def batch(self, size: int) -> None:
        self._batch.observe(size)

    def error(self) -> None:
        self._errors.inc()


class HttpMetrics:
    """The requests of one kind of route (invoke, url, health…): counts by status, and latency."""

    __slots__ = ("codes", "latency")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.latency = Counts(HTTP_BUCKETS)

    def answered(self, status: int, seconds: float) -> None:
        self.latency.observe(seconds)
        codes = self.codes
        codes[status] = codes.get(status, 0) + 1


# Name, help text and labels of the families ``Metrics.collect`` builds from the counts.
INVOCATIONS = ("headwater_invocations", "Invocations finished, by outcome.")
ERRORS = ("headwater_errors", "Invocations that ended in an error, timeout, crash or out of memory.")
COLD_STARTS = ("headwater_cold_starts", "Invocations that were their worker's first.")
THROTTLES = ("headwater_throttles", "Invocations refused for want of capacity.")
DURATION = ("headwater_invocation_duration_seconds",
            "Invocations' run time on the router's clock (throttles excluded).")
INIT = ("headwater_init_duration_seconds", "Workers' init time, from spawn to ready or to failure.")
HTTP_REQUESTS = ("headwater_http_requests", "HTTP requests answered.")
HTTP_LATENCY = ("headwater_http_request_duration_seconds",
                "Time from a request's dispatch to its response.")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        source = ("source", "function")
        self.source_lag = Gauge("headwater_source_lag_seconds",
                                "Age of the oldest message of the last batch received (sqs, s3), "
                                "lateness of the last tick (schedule), wait of the last claimed "
                                "new event (async).", source, registry=self.registry)
        self.source_batch = Histogram("headwater_source_batch_size",
                                      "Messages in each batch received (sqs, s3), events in each "
                                      "claim of the store (async).", source,
                                      registry=self.registry, buckets=BATCH_BUCKETS)
        self.source_errors = Counter("headwater_source_errors",
                                     "Failed calls to a source's endpoint or store.", source,
                                     registry=self.registry)
        self._functions: dict[str, FunctionMetrics] = {}
        self._sources: dict[tuple[str, str], SourceMetrics] = {}
        self._http: dict[str, HttpMetrics] = {}
        self.registry.register(self)

    def watch(self, collector: Collector) -> None:
        """Add a collector that reads live state at each scrape."""
        self.registry.register(collector)

    def function(self, name: str) -> FunctionMetrics:
        self._functions[name] = handle = FunctionMetrics()
        return handle

    def forget(self, name: str) -> None:
        """A deleted function's series go with it, its sources' too."""
        self._functions.pop(name, None)
        for source, function in [key for key in self._sources if key[1] == name]:
            del self._sources[source, function]
            for family in (self.source_lag, self.source_batch, self.source_errors):
                family.remove(source, function)

    def source(self, source: str, function: str) -> SourceMetrics:
        """The handle of a source for a function; a restarted poller or schedule gets the same."""
        key = (source, function)
        handle = self._sources.get(key)
        if handle is None:
            handle = self._sources[key] = SourceMetrics(self, source, function)
        return handle

    def http(self, kind: str) -> HttpMetrics:
        handle = self._http.get(kind)
        if handle is None:
            handle = self._http[kind] = HttpMetrics()
        return handle

    def describe(self) -> list[Metric]:
        """The names ``collect`` yields, so that the registry refuses a collector that repeats one."""
        return [CounterMetricFamily(*family) for family in
                (INVOCATIONS, ERRORS, COLD_STARTS, THROTTLES, HTTP_REQUESTS)] + \
               [HistogramMetricFamily(*family) for family in (DURATION, INIT, HTTP_LATENCY)]

    def collect(self) -> Iterator[Metric]:
        functions = sorted(self._functions.items())
        invocations = CounterMetricFamily(*INVOCATIONS, labels=("function", "outcome"))
        for name, counts in functions:
            for status, n in counts.outcomes.items():
                invocations.add_metric((name, status), n)
        yield invocations
        for family, read in ((ERRORS, lambda c: c.errors), (COLD_STARTS, lambda c: c.cold_starts),
                             (THROTTLES, lambda c: c.throttles)):
            counter = CounterMetricFamily(*family, labels=("function",))
            for name, counts in functions:
                counter.add_metric((name,), read(counts))
            yield counter
        for family, histogram_of in ((DURATION, lambda c: c.duration), (INIT, lambda c: c.init)):
            histogram = HistogramMetricFamily(*family, labels=("function",))
            for name, counts in functions:
                observed = histogram_of(counts)
                histogram.add_metric((name,), observed.cumulative(), observed.total)
            yield histogram
        kinds = sorted(self._http.items())
        requests = CounterMetricFamily(*HTTP_REQUESTS, labels=("kind", "code"))
        latency = HistogramMetricFamily(*HTTP_LATENCY, labels=("kind",))
        for kind, counts in kinds:
            for code, n in sorted(counts.codes.items()):
                requests.add_metric((kind, str(code)), n)
            latency.add_metric((kind,), counts.latency.cumulative(), counts.latency.total)
        yield requests
        yield latency

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The scrape, in the format the ``Accept`` header asks for (Prometheus' text by default,
        OpenMetrics when asked), and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
