"""No input makes the daemon answer 500 or die: seeded random requests over every surface."""

from __future__ import annotations

import random

import pytest
from conftest import Daemon, function_toml

PATHS = ["/2015-03-31/functions/echo/invocations", "/2015-03-31/functions/",
         "/2015-03-31/functions/echo", "/2015-03-31/functions/echo/code",
         "/2015-03-31/functions/echo/configuration", "/2015-03-31/functions/%ff/invocations",
         "/urls/echo/x", "/r/a/b", "/metrics", "/healthz", "/x%ff%00", "/2099-01-01/x"]
QUERIES = ["", "?Qualifier=x", "?Marker=-1&MaxItems=0", "?MaxItems=abc", "?a=%zz"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
HEADERS = [("X-Amz-Invocation-Type", "Event"), ("X-Amz-Invocation-Type", "DryRun"),
           ("X-Amz-Invocation-Type", "x"), ("X-Amz-Log-Type", "Tail"),
           ("X-Amz-Client-Context", "e30="), ("X-Amz-Client-Context", "W10="),
           ("X-Amz-Client-Context", "%%%"), ("Content-Type", "image/png"),
           ("Authorization", "AWS4-HMAC-SHA256 Credential=x"), ("Authorization", "Bearer x"),
           ("Content-Encoding", "gzip"), ("Cookie", "a"), ("X-Amz-Date", "yesterday")]
BODIES = [b"", b"{}", b"[", b"null", b'"\xff"', b"{" * 5000 + b"}" * 5000, bytes(range(256)),
          b'{"a":' * 100, b'{"FunctionName": 5, "Code": {"ZipFile": "!!"}}',
          b'{"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}']


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    route = '[[functions.triggers]]\ntype = "http"\nroute = "ANY /r/{p+}"\n'
    return make_daemon(function_toml("echo", "outcomes.echo") + route)


@pytest.mark.parametrize("seed", range(3))
def test_random_requests_never_get_a_500(daemon: Daemon, seed: int) -> None:
    rng = random.Random(seed)
    failures = []
    for _ in range(150):
        method = rng.choice(METHODS)
        path = rng.choice(PATHS) + rng.choice(QUERIES)
        headers = dict(rng.sample(HEADERS, rng.randint(0, 3)))
        body = rng.choice(BODIES)
        r = daemon.request(method, path, body, headers, timeout=10)
        if r.status >= 500:
            failures.append((method, path, headers, body[:40], r.status, r.body[:200]))
    assert failures == []
    assert daemon.request("GET", "/healthz").status == 200
    assert daemon.invoke("echo", {"k": 1}).json()["event"] == {"k": 1}
