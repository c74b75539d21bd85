"""A container image function against the same code as a zip, on one sandboxed daemon.

The code: a no-op handler run by awslambdaric. As an image, the one tests/image_builder.py builds
(the machine's Python and awslambdaric in a rootfs, ENTRYPOINT python3 -m awslambdaric), pulled
from a docker-registry on loopback; as a zip, a provided.al2023 function whose bootstrap runs
awslambdaric on the machine's Python, from the package.

- Deploy + first invoke, by the caller's clock: CreateFunction with ImageUri then the first
  invocation, for an image the daemon has never seen (a new manifest each round, so skopeo pulls
  and umoci unpacks it) and for one it has (the cache: one manifest request), against
  CreateFunction with the zip then its first invocation.
- Cold start, the image in the cache: the first invocation of a function whose last worker has
  gone (keep_warm_s), image against zip.
- Throughput: 4 warm workers each, the same load in alternating rounds; ratios per round.

Usage: python bench/images.py [--rounds 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from statistics import median

from harness import ROOT, headwater, load, run_row, table

sys.path.insert(0, str(ROOT / "tests"))
import image_builder

from workers.runtimes.base import BASE_PYTHON
from workers.runtimes.python import distribution_files

APP = "def handler(event, context):\n    return {}\n"
# The machine's Python, as the sandbox binds it (not the virtualenv), runs the package's client.
BOOTSTRAP = f'#!/bin/sh\nexec {BASE_PYTHON} -m awslambdaric "$_HANDLER"\n'
RIC = ("awslambdaric", "simplejson", "snapshot-restore-py")
PATH = "/2015-03-31/functions/{}/invocations"


def zip_package() -> bytes:
    """The zip function's package: the handler, the bootstrap and awslambdaric with its
    dependencies, as `pip install --target` would put them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("app.py", APP)
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        z.writestr(info, BOOTSTRAP)
        for path in map(Path, distribution_files(RIC)):
            for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
                z.write(file, str(file.relative_to(path.parent)))
    return buffer.getvalue()


def api(url: str, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as r:
        return json.loads(r.read() or b"{}")


def invoke_ms(url: str, name: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url + PATH.format(name), data=b"{}",
                                                       method="POST")) as r:
        body = r.read()
        assert "X-Amz-Function-Error" not in r.headers, body
    return (time.perf_counter() - t0) * 1000


def deploy_ms(url: str, name: str, code: dict) -> float:
    """CreateFunction then the first invocation, by the caller's clock."""
    body = {"FunctionName": name, "Role": "arn:aws:iam::1:role/x", "Code": code, "MemorySize": 256}
    body |= {"PackageType": "Image"} if "ImageUri" in code else {"Runtime": "provided.al2023",
                                                                  "Handler": "app.handler"}
    t0 = time.perf_counter()
    api(url, "POST", "/2015-03-31/functions", body)
    invoke_ms(url, name)
    elapsed = (time.perf_counter() - t0) * 1000
    api(url, "DELETE", f"/2015-03-31/functions/{name}")
    return elapsed


def zip_folder(folder: Path) -> None:
    """The zip function's code as a folder, for the config file's functions: copied with their
    times, so the client's compiled files stay valid (an unpacked zip's would not: its files get
    the time of the unpacking, and the read-only code cannot take new ones)."""
    code = folder / "zip"
    code.mkdir()
    (code / "app.py").write_text(APP)
    (code / "bootstrap").write_text(BOOTSTRAP)
    (code / "bootstrap").chmod(0o755)
    for path in map(Path, distribution_files(RIC)):
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, code / path.name)
    for path in code.rglob("*"):
        path.chmod(0o755 if path.is_dir() or path.name == "bootstrap" else 0o644)


def functions(image: str) -> str:
    out = []
    for name, code in (("image", f'image = "{image}"'),
                       ("zip", 'code = "zip"\nhandler = "app.handler"\nruntime = "provided.al2023"')):
        for prefix, extra in (("", "min_workers = 4\nmax_workers = 4"),
                              ("cold-", "max_workers = 1\nkeep_warm_s = 0.3")):
            out.append(f'[[functions]]\nname = "{prefix}{name}"\n{code}\nmemory_mb = 256\n{extra}\n')
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hw-bench-images-"))
    registry_proc = None
    try:
        oci = image_builder.build("python", work / "layout", work / "build")
        (work / "registry").mkdir()
        registry_proc, registry = image_builder.start_registry(work / "registry", auth=False)
        cached = image_builder.push(oci, registry, "noop:cached")
        layout = oci.removeprefix("oci:").rsplit(":", 1)[0]
        # One new manifest a round (an ENV of its own, the same layer): never in the cache.
        fresh = []
        for n in range(args.rounds):
            image_builder.run("umoci", "config", "--no-history", "--image", f"{layout}:latest",
                              "--config.env", f"ROUND={n}")
            fresh.append(image_builder.push(oci, registry, f"noop:round-{n}"))
        package = {"ZipFile": base64.b64encode(zip_package()).decode()}
        server = f'[images.registries."{registry}"]\ntls_verify = false\n'
        with headwater(functions(cached), {}, server=server, prepare=zip_folder) as daemon:
            url = daemon.url
            deploys: dict[str, list[float]] = {"pull": [], "cached": [], "zip": []}
            for n in range(args.rounds):
                deploys["pull"].append(deploy_ms(url, f"pull-{n}", {"ImageUri": fresh[n]}))
                deploys["cached"].append(deploy_ms(url, f"cached-{n}", {"ImageUri": cached}))
                deploys["zip"].append(deploy_ms(url, f"zip-{n}", package))
            results: dict[tuple[str, int], list] = {}
            colds: dict[str, list[float]] = {"image": [], "zip": []}
            for name in ("image", "zip"):
                load(url + PATH.format(name), 4, 1)  # warm up: workers, connections
            for _ in range(args.rounds):
                for c in (1, 8):
                    for name in ("image", "zip"):
                        results.setdefault((name, c), []).append(load(url + PATH.format(name), c,
                                                                      args.seconds))
                for name in ("image", "zip"):
                    time.sleep(1.0)  # past keep_warm_s: the next invocation starts a worker
                    colds[name].append(invoke_ms(url, f"cold-{name}"))
    finally:
        if registry_proc is not None:
            registry_proc.kill()
            registry_proc.wait(5)
        shutil.rmtree(work, ignore_errors=True)
    def row(label: str, values: list[float], digits: int = 0) -> list[str]:
        return [label, f"{median(values):.{digits}f}", f"{max(values):.{digits}f}"]

    def ratio(label: str, a: list[float], b: list[float]) -> list[str]:
        return [label, f"{median(x / y for x, y in zip(a, b, strict=True)):.2f}", ""]

    print(table(["deploy + first invoke (caller's view)", "p50 ms", "max ms"], [
        row("image, first time (pull + unpack)", deploys["pull"]),
        row("image, in the cache", deploys["cached"]),
        row("zip (the same code)", deploys["zip"]),
        ratio("ratio pull / cached", deploys["pull"], deploys["cached"]),
        ratio("ratio cached / zip", deploys["cached"], deploys["zip"])]))
    print()
    print(table(["cold start, worker gone (caller's view)", "p50 ms", "max ms"], [
        row("image", colds["image"], 1), row("zip", colds["zip"], 1),
        ratio("ratio image / zip", colds["image"], colds["zip"])]))
    print()
    rows = []
    for c in (1, 8):
        for name, label in (("image", "image (awslambdaric in the image)"),
                            ("zip", "zip (awslambdaric in the package)")):
            rows.append(run_row(label, c, results[(name, c)]))
        label, value, _ = ratio("ratio image / zip, req/s", [r.rps for r in results["image", c]],
                                [r.rps for r in results["zip", c]])
        rows.append([label, str(c), value, "", "", ""])
    print(table(["no-op invoke, 4 warm workers", "conc.", "req/s", "p50 µs", "p99 µs", "errors"], rows))
    print(json.dumps({"rounds": args.rounds, "seconds": args.seconds}))


if __name__ == "__main__":
    main()
