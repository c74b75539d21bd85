"""Health checks on a saturated daemon: ``/healthz`` on the main listener against the same check
on ``[server] health_listen``, in the same run.

wrk holds ``--connections`` connections (2,000 by default) invoking a no-op function as fast as
they can; meanwhile a check every 50 ms (or as soon as the last one ended) goes to each address,
each on a new connection (as a load balancer's checker does), timed from connect to the end of the
response. Reported: p50, p99 and max for each address, and how many checks took over 100 ms.

Usage: python bench/health.py [--connections 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import textwrap
import threading
import time

from harness import NOOP_FILES, WRK_SCRIPT, free_port, headwater, noop_function, percentile, table


def check(port: int) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    finally:
        conn.close()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    health_port = free_port()
    with headwater(textwrap.dedent(noop_function()), NOOP_FILES,
                   server=f'health_listen = "127.0.0.1:{health_port}"') as server:
        main_port = int(server.url.rsplit(":", 1)[1])
        assert server.folder is not None
        script = server.folder / "wrk.lua"
        script.write_text(WRK_SCRIPT.format(method="POST", body="{}"))
        load = subprocess.Popen(
            ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "-s", str(script),
             f"{server.url}/2015-03-31/functions/noop/invocations"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # the connections open and the load settles
        timings: dict[str, list[float]] = {"main listener": [], "health_listen": []}
        stop = time.monotonic() + args.seconds - 2.5

        def checker(name: str, port: int) -> None:  # a check every 50 ms, or as soon as it ends
            while time.monotonic() < stop:
                timings[name].append(check(port))
                time.sleep(0.05)

        threads = [threading.Thread(target=checker, args=("main listener", main_port)),
                   threading.Thread(target=checker, args=("health_listen", health_port))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out, _ = load.communicate()
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    requests, duration_us = (int(v) for v in line.split()[1:3])
    print(f"load: {args.connections} connections, {requests / duration_us * 1e6:,.0f} invokes/s")
    rows = [[name, str(len(t)), f"{percentile(t, 0.5):.1f}", f"{percentile(t, 0.99):.1f}",
             f"{max(t):.1f}", str(sum(v > 100 for v in t))] for name, t in timings.items()]
    print(table(["/healthz on", "checks", "p50 ms", "p99 ms", "max ms", "over 100 ms"], rows))


if __name__ == "__main__":
    main()
