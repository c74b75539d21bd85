"""``GET /metrics``: the daemon's state in Prometheus' text exposition format."""

from __future__ import annotations

import time
from collections.abc import Callable

from router.run.pool import FunctionPool
from router.run.registry import Registry

# name, type, help, and how to read it from a FunctionPool.
FUNCTION_METRICS: list[tuple[str, str, str, Callable[[FunctionPool], int]]] = [
    ("headwater_queue_depth", "gauge", "Invocations waiting for a worker.", lambda p: len(p.queue)),
    ("headwater_workers_busy", "gauge", "Workers running an invocation.", lambda p: p.busy),
    ("headwater_workers_idle", "gauge", "Warm workers waiting for an invocation.",
     lambda p: len(p.idle)),
    ("headwater_workers_starting", "gauge", "Workers being started.", lambda p: len(p.starting)),
    ("headwater_invocations_total", "counter", "Invocations finished, whatever the outcome.",
     lambda p: p.stats.invocations),
    ("headwater_errors_total", "counter", "Invocations that ended in an error, timeout or crash.",
     lambda p: p.stats.errors),
    ("headwater_cold_starts_total", "counter", "Invocations that started a worker's life.",
     lambda p: p.stats.cold_starts),
    ("headwater_throttles_total", "counter", "Invocations refused for want of capacity.",
     lambda p: p.stats.throttles),
]


def async_metrics(registry: Registry) -> list[str]:
    """The asynchronous events per function: the store's backlog (read every few seconds) and
    this node's counters."""
    stats = registry.asyncq.stats
    now = time.time()
    lines = []
    gauges = [("headwater_async_events_pending", "Asynchronous events stored and not finished.",
               {b.function: b.pending for b in stats.backlog}),
              ("headwater_async_oldest_event_age_seconds", "Age of the oldest event not finished.",
               {b.function: round(max(0.0, now - b.oldest_received_at), 3) for b in stats.backlog})]
    counters = [("headwater_async_retries_total", "Events put back for another attempt.",
                 stats.retries),
                ("headwater_async_destination_deliveries_total",
                 "Destination records sent to a function or a queue.", stats.delivered),
                ("headwater_async_dead_lettered_total", "Events moved to the dead-letter store.",
                 stats.dead_lettered)]
    for metric, text, values in gauges:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge"]
        lines += [f'{metric}{{function="{name}"}} {value}' for name, value in sorted(values.items())]
    for metric, text, counts in counters:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} counter"]
        lines += [f'{metric}{{function="{name}"}} {counts.get(name, 0)}' for name in registry.pools]
    return lines


def render(registry: Registry) -> str:
    lines = []
    for metric, kind, text, read in FUNCTION_METRICS:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        lines += [f'{metric}{{function="{name}"}} {read(pool)}'
                  for name, pool in registry.pools.items()]
    lines += async_metrics(registry)
    capacity = registry.capacity
    lines += ["# HELP headwater_workers Worker processes of all functions.",
              "# TYPE headwater_workers gauge", f"headwater_workers {capacity.live}",
              "# HELP headwater_workers_limit The daemon's cap on worker processes.",
              "# TYPE headwater_workers_limit gauge", f"headwater_workers_limit {capacity.limit}",
              "# HELP headwater_log_lines_dropped_total Function log lines dropped because the "
              "daemon's stderr was full.",
              "# TYPE headwater_log_lines_dropped_total counter",
              f"headwater_log_lines_dropped_total {registry.logs.dropped}"]
    sink = registry.meter.file
    lines += ["# HELP headwater_metering_failing 1 while metering records cannot be written.",
              "# TYPE headwater_metering_failing gauge",
              f"headwater_metering_failing {int(sink.failing is not None)}",
              "# HELP headwater_metering_buffered_bytes Metering records not yet in the file.",
              "# TYPE headwater_metering_buffered_bytes gauge",
              f"headwater_metering_buffered_bytes {sink.buffered}",
              "# HELP headwater_metering_dropped_total Records dropped with the buffer full.",
              "# TYPE headwater_metering_dropped_total counter",
              f"headwater_metering_dropped_total {sink.dropped}"]
    return "\n".join(lines) + "\n"
