"""What ``/metrics`` reads from the daemon's live state at each scrape: queues and workers per
function, the async backlog, and the counts other parts keep themselves (log lines and metering
records dropped, async retries and destinations)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from router.run.pool import FunctionPool
    from router.run.registry import Registry

# name, help, and how to read it from a pool.
POOL_GAUGES: tuple[tuple[str, str, Callable[[FunctionPool], int]], ...] = (
    ("headwater_queue_depth", "Invocations waiting for a worker.", lambda p: len(p.queue)),
    ("headwater_workers_busy", "Workers running an invocation.", lambda p: p.busy),
    ("headwater_workers_idle", "Warm workers waiting for an invocation.", lambda p: len(p.idle)),
    ("headwater_workers_starting", "Workers being started.", lambda p: len(p.starting)),
)


def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


class StateCollector:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        registry = self.registry
        pools = registry.pools
        for name, text, read in POOL_GAUGES:
            family = GaugeMetricFamily(name, text, labels=("function",))
            for function, pool in pools.items():
                family.add_metric((function,), read(pool))
            yield family
        capacity = registry.capacity
        yield gauge("headwater_workers", "Worker processes of all functions.", capacity.live)
        yield gauge("headwater_workers_limit", "The daemon's cap on worker processes.",
                    capacity.limit)
        yield from self.async_queue()
        yield counter("headwater_log_lines_dropped", "Function log lines dropped because the "
                      "daemon's stderr was full.", registry.logs.dropped)
        sink = registry.meter.file
        yield gauge("headwater_metering_failing", "1 while metering records cannot be written.",
                    int(sink.failing is not None))
        yield gauge("headwater_metering_buffered_bytes", "Metering records not yet in the file.",
                    sink.buffered)
        yield counter("headwater_metering_dropped", "Records dropped with the buffer full.",
                      sink.dropped)

    def async_queue(self) -> Iterator[Metric]:
        """The store's backlog per function (read every few seconds) and this node's counts."""
        stats = self.registry.asyncq.stats
        now = time.time()
        pending = GaugeMetricFamily("headwater_async_events_pending",
                                    "Asynchronous events stored and not finished.",
                                    labels=("function",))
        oldest = GaugeMetricFamily("headwater_async_oldest_event_age_seconds",
                                   "Age of the oldest event not finished.", labels=("function",))
        # Every function this node has, 0 when nothing waits, so a backlog's series does not
        # vanish as it empties; and those of functions gone from it whose events still wait.
        backlogs = {b.function: b for b in stats.backlog}
        for function in sorted(backlogs.keys() | self.registry.pools.keys()):
            backlog = backlogs.get(function)
            pending.add_metric((function,), backlog.pending if backlog else 0)
            oldest.add_metric((function,),
                              max(0.0, now - backlog.oldest_received_at) if backlog else 0.0)
        yield pending
        yield oldest
        for name, text, counts in (
                ("headwater_async_retries", "Events put back for another attempt.", stats.retries),
                ("headwater_async_destination_deliveries",
                 "Destination records sent to a function or a queue.", stats.delivered),
                ("headwater_async_dead_lettered", "Events moved to the dead-letter store.",
                 stats.dead_lettered)):
            family = CounterMetricFamily(name, text, labels=("function",))
            for function in self.registry.pools:
                family.add_metric((function,), counts.get(function, 0))
            yield family
