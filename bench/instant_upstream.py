"""A minimal OpenAI-shaped upstream that answers at once: one aiohttp handler, one pre-built answer.

    python bench/instant_upstream.py --port 8001

``POST /v1/chat/completions`` reads the body, parses it and answers a fixed ``chat.completion`` (with the
requested model's name and usage counts, so that proxies that check the answer's shape are satisfied);
``GET /v1/models`` lists one model. uvloop when installed. It does less per request than
``tierwise.testing.FakeUpstream`` (no scripts, no request checks, no fresh ids), so that the upstream takes
as little as possible of the machine's CPU away from the proxy being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

MODELS = {"object": "list", "data": [{"id": "cheap-a", "object": "model", "created": 0, "owned_by": "bench"}]}


def answer(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-instant",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"{model} says: hello"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    ).encode()


def make_app() -> web.Application:
    cache: dict[str, bytes] = {}

    async def chat(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        model = str(body.get("model", ""))
        payload = cache.get(model)
        if payload is None:
            payload = cache[model] = answer(model)
        return web.Response(body=payload, content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return web.json_response(MODELS)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
