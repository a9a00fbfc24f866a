"""The floor for any Python proxy: an aiohttp server that forwards each POST to one upstream, unchanged.

    python bench/passthrough.py --port 9000 --upstream http://127.0.0.1:8001

One pooled aiohttp ClientSession, the request body and its content-type and authorization headers passed
through, the upstream's status, content-type and body returned. No parsing, routing, logging or records:
what is left is the HTTP server, the HTTP client and the event loop (uvloop when installed, as tierwise uses).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

FORWARDED = ("content-type", "authorization")


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        async with aiohttp.ClientSession(upstream, connector=connector) as session:
            app["session"] = session
            yield

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        async with request.app["session"].post(request.rel_url, data=body, headers=headers) as answer:
            payload = await answer.read()
            return web.Response(body=payload, status=answer.status, content_type=answer.content_type)

    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="scheme://host:port of the upstream")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(make_app(args.upstream), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
