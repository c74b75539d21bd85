"""What layers cost, against the same function without them, on one sandboxed daemon.

Five layers of 200 small modules each are published through the API; "layered" names all five
(so its /opt is a merged folder), "plain" none; the handler is the same no-op. Measured in
alternating rounds, ratios taken per round:

- warm throughput, 4 warm workers each, at c=8;
- a full cold start: the configuration of a function with no warm worker is changed (a new
  environment variable), so its next invocation starts a new sandbox, fork server and worker;
  timed by the caller;
- CreateFunction, the layered one with the five layers in a new order each round, so each pays
  for a merge of their trees.

Publishing the five layers is timed once.

Usage: python bench/layers.py [--rounds 7] [--seconds 2] [--files 200]
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import sys
import time
import urllib.request
import zipfile
from statistics import median

from harness import headwater, load, table

ROLE = "arn:aws:iam::000000000000:role/x"
RUNTIME = f"python3.{sys.version_info.minor}"
NOOP = "def handler(event, context):\n    return {}\n"
LAYERS = 5
INVOKE = "/2015-03-31/functions/{}/invocations"


def zipped(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


def call(base: str, method: str, path: str, body: object = None) -> tuple[dict, float]:
    """The JSON answer of one API call and its time in ms."""
    data = None if body is None else json.dumps(body).encode()
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(base + path, data=data, method=method)) as r:
        answer = r.read()
        assert "X-Amz-Function-Error" not in r.headers, answer
    return json.loads(answer or b"{}"), (time.perf_counter() - t0) * 1000


def create(base: str, name: str, layers: list[str], workers: int) -> float:
    body = {"FunctionName": name, "Runtime": RUNTIME, "Role": ROLE, "Handler": "app.handler",
            "Code": {"ZipFile": zipped({"app.py": NOOP})}, "Layers": layers}
    _, ms = call(base, "POST", "/2015-03-31/functions", body)
    if workers:
        # min_workers has no API parameter: warm workers come from a burst of invocations.
        load(base + INVOKE.format(name), workers, 1)
    return ms


def cold_ms(base: str, name: str, round_: int) -> float:
    call(base, "PUT", f"/2015-03-31/functions/{name}/configuration",
         {"Environment": {"Variables": {"ROUND": str(round_)}}})
    return call(base, "POST", INVOKE.format(name), {})[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    module = "VALUE = " + repr("x" * 4000) + "\n"
    names = ("plain", "layered")
    with headwater("", {}) as daemon:
        base = daemon.url
        arns, publish_ms = [], 0.0
        for i in range(LAYERS):
            files = {f"python/layer{i}/m{j}.py": module for j in range(args.files)}
            layer, ms = call(base, "POST", f"/2018-10-31/layers/bench{i}/versions",
                             {"Content": {"ZipFile": zipped(files)}})
            arns.append(layer["LayerVersionArn"])
            publish_ms += ms
        create(base, "warm-up", [], 0)  # the first create pays for what every later one reuses
        orders = itertools.permutations(arns)  # a new order is a new merge
        creates: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            creates["plain"].append(create(base, f"plain-{r}", [], 0))
            creates["layered"].append(create(base, f"layered-{r}", list(next(orders)), 0))
        for name in names:
            create(base, name, arns if name == "layered" else [], 4)
            create(base, f"cold-{name}", arns if name == "layered" else [], 0)
        runs: dict[str, list] = {name: [] for name in names}
        colds: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            for name in names:
                runs[name].append(load(base + INVOKE.format(name), 8, args.seconds))
            for name in names[::1 if r % 2 else -1]:  # each first in half the rounds
                colds[name].append(cold_ms(base, f"cold-{name}", r))
    rows = []
    for what, plain, layered, better in (
            ("warm invoke req/s, c=8", [x.rps for x in runs["plain"]],
             [x.rps for x in runs["layered"]], "higher"),
            ("full cold start ms (new sandbox), caller's view", colds["plain"], colds["layered"],
             "lower"),
            ("CreateFunction ms (layered: a new merge each)", creates["plain"], creates["layered"],
             "lower")):
        ratio = median(a / b for a, b in zip(layered, plain, strict=True))
        rows.append([what, f"{median(plain):,.1f}", f"{median(layered):,.1f}",
                     f"{ratio:.2f} ({better} is better)"])
    print(table(["medians of rounds", "plain", f"{LAYERS} layers", "ratio layered / plain"], rows))
    print(f"publishing {LAYERS} layers of {args.files} files each: {publish_ms:.0f} ms in all")
    print(json.dumps({"rounds": args.rounds, "seconds": args.seconds, "files": args.files}))


if __name__ == "__main__":
    main()
