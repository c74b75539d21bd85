"""The ``headwater`` command: ``serve`` the daemon, ``invoke`` a function through its API."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:9000"


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headwater", description="Run Lambda-style functions.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", default=environ.get("HEADWATER_CONFIG", "config.toml"),
                       help="the configuration file (default: ./config.toml, or $HEADWATER_CONFIG)")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="the address to listen on (overrides [server].listen)")

    invoke = commands.add_parser("invoke", help="invoke a function and print its response")
    invoke.add_argument("name")
    invoke.add_argument("--payload", default="{}",
                        help="the event as JSON, or @FILE to read it from a file")
    invoke.add_argument("--url", default=environ.get("HEADWATER_URL", DEFAULT_URL),
                        help=f"the daemon's address (default: {DEFAULT_URL}, or $HEADWATER_URL)")
    invoke.add_argument("--log", action="store_true",
                        help="also print the invocation's log (its last 4 KB) to stderr")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = build_parser(environ).parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args, environ)
    return cmd_invoke(args)


def cmd_serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from router import config as config_module  # the daemon's imports stay out of `invoke`

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_module.load(args.config, environ, listen=args.listen)
    except config_module.ConfigError as e:
        print(f"headwater: invalid configuration {args.config}: {e}", file=sys.stderr)
        return 2

    import uvloop

    from router.server import serve
    return uvloop.run(serve(config, environ))


def read_payload(value: str) -> bytes:
    if value.startswith("@"):
        return Path(value[1:]).read_bytes()
    return value.encode()


def cmd_invoke(args: argparse.Namespace) -> int:
    try:
        payload = read_payload(args.payload)
    except OSError as e:
        print(f"headwater: cannot read {args.payload[1:]}: {e.strerror}", file=sys.stderr)
        return 2
    url = f"{args.url.rstrip('/')}/2015-03-31/functions/{args.name}/invocations"
    request = urllib.request.Request(url, data=payload, method="POST", headers={
        "Content-Type": "application/json", "X-Amz-Log-Type": "Tail" if args.log else "None"})
    try:
        with urllib.request.urlopen(request, timeout=960) as response:
            body, headers = response.read(), response.headers
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            message = json.loads(body)
        except ValueError:
            message = body.decode(errors="replace")
        print(f"headwater: {e.code} {e.headers.get('x-amzn-ErrorType', e.reason)}: {message}",
              file=sys.stderr)
        return 1
    except urllib.error.URLError as e:
        print(f"headwater: cannot reach {args.url}: {e.reason}", file=sys.stderr)
        return 1
    if args.log and headers.get("X-Amz-Log-Result"):
        sys.stderr.write(base64.b64decode(headers["X-Amz-Log-Result"]).decode(errors="replace"))
    sys.stdout.write(body.decode(errors="replace") + "\n")
    return 1 if headers.get("X-Amz-Function-Error") else 0


if __name__ == "__main__":
    sys.exit(main())
