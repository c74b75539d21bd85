"""The baseline: a bare aiohttp + uvloop server answering ``{}`` on the Invoke API's path.

Usage: python bench/raw_server.py PORT
"""

import sys

import uvloop
from aiohttp import web


async def handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"{}", content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", handler)
    app.router.add_route("*", "/urls/{function}/{path:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
