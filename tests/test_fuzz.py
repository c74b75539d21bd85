"""No input makes the daemon answer 500, log a traceback or die: seeded random requests over every
surface, on a daemon without credentials and on one with them (anonymous, with a valid token, and
SigV4-signed by the real key)."""

from __future__ import annotations

import random

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from conftest import Daemon, function_toml, untimed

ARN = "arn:aws:lambda:us-east-1:000000000000:function:echo"
PATHS = ["/2015-03-31/functions/echo/invocations", "/2015-03-31/functions/",
         "/2015-03-31/functions/echo", "/2015-03-31/functions/echo/code",
         "/2015-03-31/functions/echo/configuration", "/2015-03-31/functions/%ff/invocations",
         "/2015-03-31/functions", "/2021-10-31/functions/echo/url",
         "/2021-10-31/functions/made/url", "/2021-10-31/functions/echo/urls",
         f"/2017-03-31/tags/{ARN}", "/2017-03-31/tags/made", "/2017-03-31/tags/%00",
         "/urls/echo/x", "/urls/made/", "/urls/nosuch", "/r/a/b", "/metrics", "/healthz",
         "/readyz", "/x%ff%00", "/2099-01-01/x"]
QUERIES = ["", "?Qualifier=x", "?Marker=-1&MaxItems=0", "?MaxItems=abc", "?a=%zz",
           "?tagKeys=a&tagKeys=%ff", "?Qualifier=$LATEST"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
HEADERS = [("X-Amz-Invocation-Type", "Event"), ("X-Amz-Invocation-Type", "DryRun"),
           ("X-Amz-Invocation-Type", "x"), ("X-Amz-Log-Type", "Tail"),
           ("X-Amz-Client-Context", "e30="), ("X-Amz-Client-Context", "W10="),
           ("X-Amz-Client-Context", "%%%"), ("Content-Type", "image/png"),
           ("Authorization", "AWS4-HMAC-SHA256 Credential=x"), ("Authorization", "Bearer x"),
           ("Content-Encoding", "gzip"), ("Cookie", "a"), ("X-Amz-Date", "yesterday")]
BODIES = [b"", b"{}", b"[", b"null", b'"\xff"', b"{" * 5000 + b"}" * 5000, bytes(range(256)),
          b'{"a":' * 100, b'{"FunctionName": 5, "Code": {"ZipFile": "!!"}}',
          b'{"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}', b"[" * 100_000 + b"]" * 100_000,
          b'{"AuthType": "NONE", "Cors": {"MaxAge": "x", "AllowOrigins": [1]}}',
          b'{"AuthType": 7}', b'{"Tags": {"aws:x": 1}}', b'{"Tags": []}', b'{"Layers": "x"}',
          b'{"Environment": {"Variables": {"AWS_REGION": 1}}}', b'{"Description": "\\ud800"}',
          b'{"Timeout": 1e999}', b'{"MemorySize": 123456789012345678901234567890}',
          b'{"FunctionName": "made", "Role": "r", "Runtime": "python3.11", "Handler": "a.b", '
          b'"Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}, "Tags": {"k": "v"}}']


KEY, SECRET, TOKEN = "AKIDFUZZ", "fuzz-secret", "fuzz-token"
ROUTE = '[[functions.triggers]]\ntype = "http"\nroute = "ANY /r/{p+}"\n'


@pytest.fixture(scope="module")
def open_daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(function_toml("echo", "outcomes.echo") + ROUTE)


@pytest.fixture(scope="module")
def guarded_daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(function_toml("echo", "outcomes.echo") + ROUTE,
                       server=f'access_keys = {{ {KEY} = "{SECRET}" }}\ntokens = ["{TOKEN}"]')


def credentials(daemon: Daemon, rng: random.Random, method: str, path: str,
                body: bytes) -> dict[str, str]:
    """None, a valid bearer token, or a real SigV4 signature of this very request."""
    kind = rng.choice(["none", "token", "sigv4"])
    if kind == "token":
        return {"Authorization": f"Bearer {TOKEN}"}
    if kind == "sigv4":
        request = AWSRequest(method=method, url=daemon.url + path, data=body)
        SigV4Auth(Credentials(KEY, SECRET), "lambda", "us-east-1").add_auth(request)
        return dict(request.headers.items())
    return {}


def fuzz(daemon: Daemon, seed: int, signed: bool) -> None:
    rng = random.Random(seed)
    failures = []
    start = len(daemon.lines)
    for _ in range(150):
        method = rng.choice(METHODS)
        path = rng.choice(PATHS) + rng.choice(QUERIES)
        headers = dict(rng.sample(HEADERS, rng.randint(0, 3)))
        body = rng.choice(BODIES)
        if signed:
            headers.update(credentials(daemon, rng, method, path, body))
        r = daemon.request(method, path, body, headers, timeout=10)
        if r.status >= 500:
            failures.append((method, path, headers, body[:40], r.status, r.body[:200]))
    assert failures == []
    # The daemon's own lines (a function's output is prefixed with its name in brackets).
    own = [line for line in daemon.lines[start:] if not untimed(line).startswith("[")]
    assert not [line for line in own if "Traceback" in line or "Error handling" in line], own
    assert daemon.request("GET", "/healthz").status == 200


@pytest.mark.parametrize("seed", range(3))
def test_random_requests_never_get_a_500(open_daemon: Daemon, seed: int) -> None:
    fuzz(open_daemon, seed, signed=False)
    assert open_daemon.invoke("echo", {"k": 1}).json()["event"] == {"k": 1}


@pytest.mark.parametrize("seed", range(3))
def test_random_requests_with_and_without_credentials_never_get_a_500(
        guarded_daemon: Daemon, seed: int) -> None:
    fuzz(guarded_daemon, seed, signed=True)
    ok = guarded_daemon.invoke("echo", {"k": 1}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.json()["event"] == {"k": 1}  # type: ignore[index]
