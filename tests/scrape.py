"""``/metrics`` read as Prometheus reads it: through prometheus-client's own text parser."""

from __future__ import annotations

from conftest import Daemon
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


class Scrape:
    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def names(self) -> set[str]:
        """Every sample name (a histogram's ``_bucket``, ``_sum`` and ``_count`` each)."""
        return {s.name for s in self.samples}

    def matching(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` with ``labels`` (among others); 0 when there is none, as
        Prometheus reads a series that has not appeared yet."""
        found = self.matching(name, **labels)
        assert len(found) <= 1, found
        return found[0].value if found else 0.0

    def buckets(self, name: str, **labels: str) -> dict[str, float]:
        """A histogram's cumulative buckets, by their ``le``."""
        return {s.labels["le"]: s.value for s in self.matching(name + "_bucket", **labels)}


def scrape(daemon: Daemon, headers: dict[str, str] | None = None) -> Scrape:
    r = daemon.request("GET", "/metrics", headers=headers)
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    return Scrape(r.body.decode())
