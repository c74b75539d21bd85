"""Response streaming against buffered responses, the same Node.js code on one daemon.

- Time to first byte: a handler that writes its first bytes, works 200 ms, then writes the rest,
  behind a RESPONSE_STREAM function URL, against the same handler returning its whole response to a
  BUFFERED URL. The ratio is streamed / buffered (below 1: the caller starts sooner).
- Large responses: 4 MB through each URL, and through InvokeWithResponseStream (event stream
  framing) against Invoke; MB/s, ratio streamed / buffered.
- Small responses: requests/s of a no-op "{}" through each URL at c=8 (the cost of the streamed
  path's chunked answer and per-chunk bookkeeping).

Rounds alternate streamed and buffered; medians of the rounds.

Usage: python bench/streaming.py [--rounds 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import http.client
import time
from statistics import median
from urllib.parse import urlsplit

from harness import headwater, load, table

BIG = 4 * 1024 * 1024
HANDLERS = f"""\
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const BIG = "x".repeat({BIG});
exports.ttfbStreamed = awslambda.streamifyResponse(async (event, stream) => {{
  stream.setContentType("text/plain");
  stream.write("first");
  await sleep(200);
  stream.end("rest");
}});
exports.ttfbBuffered = async () => {{ await sleep(200); return {{ statusCode: 200, body: "firstrest" }}; }};
exports.bigStreamed = awslambda.streamifyResponse(async (event, stream) => {{
  stream.setContentType("text/plain");
  for (let at = 0; at < BIG.length; at += 65536) stream.write(BIG.slice(at, at + 65536));
  stream.end();
}});
exports.bigBuffered = async () => ({{ statusCode: 200, body: BIG }});
exports.bigInvoke = async () => BIG;
exports.noopStreamed = awslambda.streamifyResponse(async (event, stream) => {{ stream.end("{{}}"); }});
exports.noopBuffered = async () => ({{}});
"""
FUNCTIONS = {  # name → (handler, invoke mode of its URL)
    "ttfb-s": ("ttfbStreamed", "RESPONSE_STREAM"), "ttfb-b": ("ttfbBuffered", "BUFFERED"),
    "big-s": ("bigStreamed", "RESPONSE_STREAM"), "big-b": ("bigBuffered", "BUFFERED"),
    "big-i": ("bigInvoke", "BUFFERED"),
    "noop-s": ("noopStreamed", "RESPONSE_STREAM"), "noop-b": ("noopBuffered", "BUFFERED"),
}


def functions() -> str:
    return "\n".join(
        f'[[functions]]\nname = "{name}"\nhandler = "index.{handler}"\ncode = "node"\n'
        f'runtime = "nodejs20.x"\nmemory_mb = 512\nmin_workers = 2\nmax_workers = 2\n'
        f'url = {{ auth = "none", invoke_mode = "{mode}" }}\n'
        for name, (handler, mode) in FUNCTIONS.items())


def fetch(base: str, method: str, path: str) -> tuple[float, float, int]:
    """Seconds to the first body byte and to the last, and the body's size."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    t0 = time.perf_counter()
    conn.request(method, path, body=b"{}" if method == "POST" else None)
    r = conn.getresponse()
    first = r.read1(65536)
    t_first = time.perf_counter() - t0
    size = len(first) + len(r.read())
    t_last = time.perf_counter() - t0
    conn.close()
    assert r.status == 200 and size, (r.status, size)
    return t_first, t_last, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    with headwater(functions(), {"node/index.js": HANDLERS}) as daemon:
        base = daemon.url
        for name in FUNCTIONS:  # warm every worker's code path once
            fetch(base, "GET", f"/urls/{name}/")
        ttfb: dict[str, list[float]] = {"s": [], "b": []}
        mbps: dict[str, list[float]] = {k: [] for k in ("url-s", "url-b", "api-s", "api-i")}
        rps: dict[str, list[float]] = {"s": [], "b": []}
        for _ in range(args.rounds):
            for kind in ("s", "b"):
                ttfb[kind].append(fetch(base, "GET", f"/urls/ttfb-{kind}/")[0] * 1000)
            for key, (method, path) in {
                "url-s": ("GET", "/urls/big-s/"), "url-b": ("GET", "/urls/big-b/"),
                "api-s": ("POST", "/2021-11-15/functions/big-s/response-streaming-invocations"),
                "api-i": ("POST", "/2015-03-31/functions/big-i/invocations"),
            }.items():
                _, seconds, size = fetch(base, method, path)
                mbps[key].append(size / seconds / 1e6)
            for kind in ("s", "b"):
                rps[kind].append(load(f"{base}/urls/noop-{kind}/", 8, args.seconds, "GET").rps)
    ratio = lambda a, b: f"{median(a) / median(b):.2f}"  # noqa: E731
    print(table(["what", "streamed", "buffered", "ratio"], [
        ["time to first byte, 200 ms handler (ms)", f"{median(ttfb['s']):.1f}",
         f"{median(ttfb['b']):.1f}", ratio(ttfb["s"], ttfb["b"])],
        ["4 MB via function URL (MB/s)", f"{median(mbps['url-s']):.0f}",
         f"{median(mbps['url-b']):.0f}", ratio(mbps["url-s"], mbps["url-b"])],
        ["4 MB via InvokeWithResponseStream vs Invoke (MB/s)", f"{median(mbps['api-s']):.0f}",
         f"{median(mbps['api-i']):.0f}", ratio(mbps["api-s"], mbps["api-i"])],
        ["no-op via function URL, c=8 (req/s)", f"{median(rps['s']):.0f}",
         f"{median(rps['b']):.0f}", ratio(rps["s"], rps["b"])],
    ]))


if __name__ == "__main__":
    main()
