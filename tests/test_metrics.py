"""``/metrics`` scraped as Prometheus scrapes it (prometheus-client's parser) from the real daemon:
invocations by outcome and their histograms, workers, HTTP requests by kind, sources (schedule,
async, an SQS batch from moto's server), process metrics, and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import Daemon, function_toml
from moto_server import MotoServer, aws_section, until
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from scrape import Scrape, scrape

from router.api import dispatch
from router.metrics.instruments import DURATION_BUCKETS, Counts
from sources import http_trigger, invoke_api, s3_webhook
from sources.poller import oldest_age_s

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana-dashboard.json"

# --- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "kind"), [
    ("POST", "/2015-03-31/functions/f/invocations", "invoke"),
    ("POST", "/2021-11-15/functions/f/response-streaming-invocations", "invoke"),
    ("GET", "/headwater/logs/f", "logs"),
    ("GET", "/2015-03-31/functions/f", "management"),
    ("GET", "/2015-03-31/functions", "management"),
    ("POST", "/2021-10-31/functions/f/url", "management"),
    ("GET", "/2015-03-31/nothing-here", "management"),  # an unknown operation
    ("GET", "/urls/f/a/b", "url"),
    ("GET", "/items/1", "route"),
    ("GET", "/healthz", "health"),
    ("HEAD", "/readyz", "health"),
    ("GET", "/metrics", "metrics"),
    ("POST", "/events/s3/f", "webhook"),
])
def test_each_path_has_the_kind_of_its_handler(method: str, path: str, kind: str) -> None:
    assert dispatch.kind_of(dispatch.resolve(method, path)[0]) == kind


def test_the_operations_address_counts_what_it_serves() -> None:
    assert dispatch.kind_of(dispatch.resolve_operations("GET", "/metrics")) == "metrics"
    assert dispatch.kind_of(dispatch.resolve_operations("GET", "/x")) == "other"
    assert {invoke_api.invoke, http_trigger.function_url, s3_webhook.receive} <= set(dispatch.KINDS)


@pytest.mark.parametrize(("values", "cumulative"), [
    ([], [("1.0", 0), ("2.5", 0), ("+Inf", 0)]),
    ([1.0], [("1.0", 1), ("2.5", 1), ("+Inf", 1)]),  # a bucket's bound is in it ("le")
    ([0.0, 1.0001, 2.5, 99.0], [("1.0", 1), ("2.5", 3), ("+Inf", 4)]),
])
def test_counts_are_cumulative_buckets_with_their_bound_included(
        values: list[float], cumulative: list[tuple[str, int]]) -> None:
    counts = Counts((1.0, 2.5))
    for value in values:
        counts.observe(value)
    assert counts.cumulative() == cumulative
    assert counts.total == sum(values)


@pytest.mark.parametrize(("attributes", "age"), [
    ([{"SentTimestamp": "99000"}, {"SentTimestamp": "95500"}], 4.5),
    ([{"SentTimestamp": "100000"}], 0.0),
    ([{}, {"SentTimestamp": "98000"}], 2.0),  # a message without the attribute is skipped
    ([{}], None),
])
def test_the_lag_of_a_batch_is_the_age_of_its_oldest_message(
        attributes: list[dict[str, str]], age: float | None) -> None:
    assert oldest_age_s([{"Attributes": a} for a in attributes], 100.0) == age


# --- the daemon ----------------------------------------------------------------------------------

ROUTE = '[[functions.triggers]]\ntype = "http"\nroute = "GET /hello"\n'
SCHEDULE = '[[functions.triggers]]\ntype = "schedule"\nexpression = "rate(1 second)"\n'
ASYNC = "[async]\npoll_s = 0.05\n"


@pytest.fixture(scope="module")
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    functions = "".join([
        function_toml("ok", "outcomes.echo", max_workers=2) + ROUTE,
        function_toml("fails", "outcomes.raises"),
        function_toml("slow", "outcomes.sleeps", timeout_s=1),
        function_toml("crashes", "outcomes.exits"),
        function_toml("off", "outcomes.echo", max_workers=0),
        function_toml("ticks", "asyncfn.records") + SCHEDULE,
    ])
    return make_daemon(functions, server=ASYNC)


def test_invocations_are_counted_by_outcome_with_their_durations(daemon: Daemon) -> None:
    before = scrape(daemon)
    made = {("ok", "success"): 5, ("fails", "error"): 2, ("slow", "timeout"): 1,
            ("crashes", "crash"): 1, ("off", "throttled"): 3}
    statuses = {"success": 200, "error": 200, "timeout": 200, "crash": 200, "throttled": 429}
    payloads = {"ok": {}, "fails": {}, "slow": {"seconds": 5}, "crashes": {"how": "os_exit"},
                "off": {}}
    for (function, outcome), times in made.items():
        for _ in range(times):
            assert daemon.invoke(function, payloads[function]).status == statuses[outcome]
    after = scrape(daemon)
    assert after.families["headwater_invocations"].type == "counter"
    assert after.families["headwater_invocation_duration_seconds"].type == "histogram"
    for function in payloads:
        ran = sum(n for (f, outcome), n in made.items() if f == function and outcome != "throttled")
        for outcome in ("success", "error", "timeout", "crash", "oom", "throttled"):
            delta = (after.value("headwater_invocations_total", function=function, outcome=outcome)
                     - before.value("headwater_invocations_total", function=function,
                                    outcome=outcome))
            assert delta == made.get((function, outcome), 0), (function, outcome)
        # One duration per invocation that was not throttled, in cumulative buckets.
        count = "headwater_invocation_duration_seconds_count"
        assert after.value(count, function=function) - before.value(count, function=function) == ran
        buckets = after.buckets("headwater_invocation_duration_seconds", function=function)
        assert list(buckets) == [*(str(float(b)) for b in DURATION_BUCKETS), "+Inf"]
        assert list(buckets.values()) == sorted(buckets.values())
        assert buckets["+Inf"] == after.value(count, function=function)
    slow = after.buckets("headwater_invocation_duration_seconds", function="slow")
    assert slow["0.5"] == 0 and slow["2.5"] == 1  # killed at its 1 s timeout
    assert 1.0 <= after.value("headwater_invocation_duration_seconds_sum", function="slow") < 2.5
    assert after.value("headwater_errors_total", function="fails") == 2
    assert after.value("headwater_errors_total", function="ok") == 0
    assert after.value("headwater_throttles_total", function="off") == 3
    cold = after.value("headwater_cold_starts_total", function="ok")
    assert cold >= 1
    # Every cold start had a worker's init first (a warm floor's workers init with no caller).
    assert after.value("headwater_init_duration_seconds_count", function="ok") >= cold
    assert after.value("headwater_init_duration_seconds_sum", function="ok") > 0
    assert after.value("headwater_workers_idle", function="ok") >= 1
    assert after.value("headwater_queue_depth", function="ok") == 0
    assert after.value("headwater_workers_limit") == 64


def test_http_requests_are_counted_and_timed_by_kind(daemon: Daemon) -> None:
    before = scrape(daemon)
    for _ in range(3):
        assert daemon.request("GET", "/healthz").status == 200
    assert daemon.request("GET", "/2015-03-31/functions").status == 200
    assert daemon.request("GET", "/urls/ok/").status == 200
    assert daemon.request("GET", "/hello").status == 200
    assert daemon.request("GET", "/nowhere").status == 404
    assert daemon.invoke("ok", {}).status == 200
    after = scrape(daemon)
    expected = {("health", "200"): 3, ("management", "200"): 1, ("url", "200"): 1,
                ("route", "200"): 1, ("route", "404"): 1, ("invoke", "200"): 1,
                ("metrics", "200"): 1}  # the first scrape, counted once it was answered
    for (kind, code), n in expected.items():
        delta = (after.value("headwater_http_requests_total", kind=kind, code=code)
                 - before.value("headwater_http_requests_total", kind=kind, code=code))
        assert delta == n, (kind, code)
    count = "headwater_http_request_duration_seconds_count"
    for kind in ("health", "management", "url", "route", "invoke", "metrics"):
        requests = sum(n for (k, _), n in expected.items() if k == kind)
        assert after.value(count, kind=kind) - before.value(count, kind=kind) == requests, kind
    health = after.buckets("headwater_http_request_duration_seconds", kind="health")
    assert health["+Inf"] == after.value(count, kind="health") and health["0.1"] >= 3


def test_process_metrics_come_from_the_daemons_own_registry(daemon: Daemon) -> None:
    found = scrape(daemon)
    assert found.value("process_resident_memory_bytes") > 10 * 1024 * 1024
    assert found.value("process_cpu_seconds_total") > 0
    assert found.value("process_open_fds") > 0
    assert found.matching("python_info")
    # A counter's _created series is left out, and nothing of the test process' default registry.
    assert not [n for n in found.names() if n.endswith("_created")]


def test_a_schedule_and_the_async_runner_show_lag_and_batches(daemon: Daemon) -> None:
    until(lambda: scrape(daemon).value("headwater_source_batch_size_count", source="async",
                                       function="ticks") >= 2, what="two ticks claimed")
    found = scrape(daemon)
    lateness = found.value("headwater_source_lag_seconds", source="schedule", function="ticks")
    assert 0 < lateness < 1.0  # fired on time, give or take the machine's load
    assert found.matching("headwater_source_lag_seconds", source="async", function="ticks")
    # Each tick is one event: claims of one event each, unless two were due at once.
    claims = found.value("headwater_source_batch_size_count", source="async", function="ticks")
    claimed = found.value("headwater_source_batch_size_sum", source="async", function="ticks")
    assert claims <= claimed <= claims * 2
    assert found.value("headwater_source_errors_total", source="schedule", function="ticks") == 0


def test_openmetrics_is_served_when_the_scraper_asks_for_it(daemon: Daemon) -> None:
    r = daemon.request("GET", "/metrics", headers={
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"})
    assert r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    families = {f.name: f for f in openmetrics_families(r.body.decode())}
    assert families["headwater_invocation_duration_seconds"].type == "histogram"


# --- the Grafana dashboard -------------------------------------------------------------------

METRIC = re.compile(r"\b((?:headwater|process)_[a-z_]+)\b")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row's


def test_the_dashboards_queries_name_metrics_the_daemon_exports(daemon: Daemon) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["title"]
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["query"] == "prometheus"
    until(lambda: scrape(daemon).matching("headwater_source_lag_seconds", source="schedule"),
          what="a tick's lag")
    exported = scrape(daemon).names()
    queried = set()
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == f"${{{variable['name']}}}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, (panel["title"], target["expr"])
            assert names <= exported, (panel["title"], names - exported)
            queried |= names
    wanted = {"headwater_invocations_total", "headwater_invocation_duration_seconds_bucket",
              "headwater_cold_starts_total", "headwater_workers_busy", "headwater_queue_depth",
              "headwater_async_events_pending", "headwater_source_lag_seconds",
              "headwater_http_request_duration_seconds_bucket"}
    assert wanted <= queried, wanted - queried
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))


# --- a function that goes, and an SQS batch ----------------------------------------------------


def test_a_function_removed_by_a_reload_leaves_metrics(make_daemon: Callable[..., Daemon]) -> None:
    kept = function_toml("kept", "outcomes.echo")
    gone = function_toml("gone", "outcomes.echo") + (  # a source's series too
        '[[functions.triggers]]\ntype = "schedule"\nexpression = "rate(1 second)"\n')
    daemon = make_daemon(kept + gone)
    assert daemon.invoke("gone", {}).status == 200
    assert scrape(daemon).value("headwater_invocations_total", function="gone", outcome="success") == 1
    deadline = time.monotonic() + 10
    while not scrape(daemon).matching("headwater_source_lag_seconds", function="gone"):
        assert time.monotonic() < deadline, "no schedule tick"
        time.sleep(0.2)
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(text.replace(gone, ""))
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for_line("reloaded: removed gone", timeout=15)
    found = scrape(daemon)
    assert not [s for s in found.samples if s.labels.get("function") == "gone"]
    assert found.matching("headwater_invocations_total", function="kept")


HANDLER = "def handler(event, context):\n    return None\n"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def test_an_sqs_batch_shows_its_size_its_lag_and_endpoint_errors(
        make_daemon: Callable[..., Daemon], moto: MotoServer) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    url = sqs.create_queue(QueueName="metered")["QueueUrl"]
    sent = 7
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"}
                                                  for i in range(sent)])
    time.sleep(0.5)  # the messages' age when the daemon first sees them
    trigger = f'[[functions.triggers]]\ntype = "sqs"\nqueue_url = "{url}"\nbatch_size = 10\n'
    daemon = make_daemon(aws_section(moto.endpoint) + function_toml("drain", "sqsfn.handler")
                         + trigger, {"functions/sqsfn.py": HANDLER})
    labels = {"source": "sqs", "function": "drain"}

    def done() -> Scrape | None:
        """The scrape once every message was received and each batch's invocation finished."""
        found = scrape(daemon)
        ran = found.value("headwater_invocations_total", function="drain", outcome="success")
        if found.value("headwater_source_batch_size_sum", **labels) >= sent and \
                ran == found.value("headwater_source_batch_size_count", **labels):
            return found
        return None

    found = until(done, what="every message run")
    assert found.value("headwater_source_batch_size_sum", **labels) == sent  # none twice
    batches = found.value("headwater_source_batch_size_count", **labels)
    assert 1 <= batches <= sent
    # The batches' sizes fall in SQS's buckets: none is over 10 (batch_size).
    assert found.buckets("headwater_source_batch_size", **labels)["10.0"] == batches
    assert found.value("headwater_source_lag_seconds", **labels) >= 0.5
    assert found.value("headwater_source_errors_total", **labels) == 0
    sqs.close()
    moto.stop()  # the endpoint goes away: every failed receive counts
    try:
        until(lambda: scrape(daemon).value("headwater_source_errors_total", **labels) >= 1,
              timeout=30, what="a failed receive counted")
    finally:
        moto.start()
