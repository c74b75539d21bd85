"""``GET /metrics``: the daemon's state in Prometheus' text exposition format."""

from __future__ import annotations

from router.registry import Registry

# name, type, help; per-function gauges and counters read from FunctionPool.
FUNCTION_METRICS = [
    ("headwater_queue_depth", "gauge", "Invocations waiting for a worker."),
    ("headwater_workers_busy", "gauge", "Workers running an invocation."),
    ("headwater_workers_idle", "gauge", "Warm workers waiting for an invocation."),
    ("headwater_workers_starting", "gauge", "Workers being started."),
    ("headwater_invocations_total", "counter", "Invocations finished, whatever the outcome."),
    ("headwater_errors_total", "counter", "Invocations that ended in an error, timeout or crash."),
    ("headwater_cold_starts_total", "counter", "Invocations that started a worker's life."),
    ("headwater_throttles_total", "counter", "Invocations refused for want of capacity."),
]


def function_values(registry: Registry) -> dict[str, dict[str, int]]:
    values: dict[str, dict[str, int]] = {}
    for name, pool in registry.pools.items():
        values[name] = {
            "headwater_queue_depth": len(pool.queue),
            "headwater_workers_busy": pool.busy,
            "headwater_workers_idle": len(pool.idle),
            "headwater_workers_starting": len(pool.starting),
            "headwater_invocations_total": pool.stats.invocations,
            "headwater_errors_total": pool.stats.errors,
            "headwater_cold_starts_total": pool.stats.cold_starts,
            "headwater_throttles_total": pool.stats.throttles,
        }
    return values


def render(registry: Registry) -> str:
    values = function_values(registry)
    lines = []
    for metric, kind, text in FUNCTION_METRICS:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
        lines += [f'{metric}{{function="{name}"}} {v[metric]}' for name, v in values.items()]
    capacity = registry.capacity
    lines += ["# HELP headwater_workers Worker processes of all functions.",
              "# TYPE headwater_workers gauge", f"headwater_workers {capacity.live}",
              "# HELP headwater_workers_limit The daemon's cap on worker processes.",
              "# TYPE headwater_workers_limit gauge", f"headwater_workers_limit {capacity.limit}"]
    return "\n".join(lines) + "\n"
