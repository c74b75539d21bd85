"""The daemon's Prometheus instruments: one private ``CollectorRegistry`` and what the hot paths
update in it.

Each part that counts asks once for a handle (``function``, ``source``, ``http``) holding the label
children it updates, so an invocation or a request costs a few increments and no label lookup.
Live state (queues, workers, the async backlog) is not counted here: ``router.metrics.state``
reads it at each scrape.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

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


class FunctionMetrics:
    """One function's counters and histograms, updated by its pool as invocations finish."""

    __slots__ = ("_outcomes", "_errors", "_cold_starts", "_throttles", "_duration", "_init")

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._outcomes = {s: metrics.invocations.labels(name, s) for s in STATUSES}
        self._errors = metrics.errors.labels(name)
        self._cold_starts = metrics.cold_starts.labels(name)
        self._throttles = metrics.throttles.labels(name)
        self._duration = metrics.duration.labels(name)
        self._init = metrics.init_duration.labels(name)

    def ran(self, outcome: Outcome, cold: bool) -> None:
        """An invocation that was not throttled ended, whatever else its outcome."""
        status = outcome.status
        self._outcomes[status].inc()
        self._duration.observe(outcome.duration_ms / 1000)
        if cold:
            self._cold_starts.inc()
        if status != "success":
            self._errors.inc()

    def throttled(self) -> None:
        self._outcomes["throttled"].inc()
        self._throttles.inc()

    def initialized(self, init_ms: float) -> None:
        """A worker's init ended, ready or failed."""
        self._init.observe(init_ms / 1000)


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
    """The requests of one kind of route (invoke, url, health…): count by status, and latency."""

    __slots__ = ("_requests", "_kind", "_codes", "_latency")

    def __init__(self, metrics: Metrics, kind: str) -> None:
        self._requests = metrics.http_requests
        self._kind = kind
        self._codes: dict[int, Counter] = {}
        self._latency = metrics.http_latency.labels(kind)

    def answered(self, status: int, seconds: float) -> None:
        self._latency.observe(seconds)
        counter = self._codes.get(status)
        if counter is None:
            counter = self._codes[status] = self._requests.labels(self._kind, str(status))
        counter.inc()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

        def counter(name: str, text: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, text, labels, registry=self.registry)

        def histogram(name: str, text: str, labels: tuple[str, ...],
                      buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, text, labels, registry=self.registry, buckets=buckets)

        function = ("function",)
        self.invocations = counter("headwater_invocations", "Invocations finished, by outcome.",
                                   ("function", "outcome"))
        self.errors = counter("headwater_errors",
                              "Invocations that ended in an error, timeout, crash or out of memory.",
                              function)
        self.cold_starts = counter("headwater_cold_starts",
                                   "Invocations that were their worker's first.", function)
        self.throttles = counter("headwater_throttles",
                                 "Invocations refused for want of capacity.", function)
        self.duration = histogram("headwater_invocation_duration_seconds",
                                  "Invocations' run time on the router's clock (throttles "
                                  "excluded).", function, DURATION_BUCKETS)
        self.init_duration = histogram("headwater_init_duration_seconds",
                                       "Workers' init time, from spawn to ready or to failure.",
                                       function, INIT_BUCKETS)
        source = ("source", "function")
        self.source_lag = Gauge("headwater_source_lag_seconds",
                                "Age of the oldest message of the last batch received (sqs, s3), "
                                "lateness of the last tick (schedule), wait of the last claimed "
                                "new event (async).", source, registry=self.registry)
        self.source_batch = histogram("headwater_source_batch_size",
                                      "Messages in each batch received (sqs, s3), events in each "
                                      "claim of the store (async).", source, BATCH_BUCKETS)
        self.source_errors = counter("headwater_source_errors",
                                     "Failed calls to a source's endpoint or store.", source)
        self.http_requests = counter("headwater_http_requests", "HTTP requests answered.",
                                     ("kind", "code"))
        self.http_latency = histogram("headwater_http_request_duration_seconds",
                                      "Time from a request's dispatch to its response.",
                                      ("kind",), HTTP_BUCKETS)
        self._sources: dict[tuple[str, str], SourceMetrics] = {}
        self._http: dict[str, HttpMetrics] = {}

    def watch(self, collector: Collector) -> None:
        """Add a collector that reads live state at each scrape."""
        self.registry.register(collector)

    def function(self, name: str) -> FunctionMetrics:
        return FunctionMetrics(self, name)

    def forget(self, name: str) -> None:
        """A deleted function's series go with it."""
        for status in STATUSES:
            self.invocations.remove(name, status)
        for family in (self.errors, self.cold_starts, self.throttles, self.duration,
                       self.init_duration):
            family.remove(name)

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
            handle = self._http[kind] = HttpMetrics(self, kind)
        return handle

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The scrape, in the format the ``Accept`` header asks for (Prometheus' text by default,
        OpenMetrics when asked), and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
