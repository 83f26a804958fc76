"""The aiohttp application: the provider's endpoint plus loopback admin endpoints."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from mobile_status_dagster.simulator.config import changes_from_json
from mobile_status_dagster.simulator.provider import SimulatedProvider

PROVIDER_KEY: web.AppKey[SimulatedProvider] = web.AppKey("provider", SimulatedProvider)
"""Where :func:`create_app` keeps the provider on the application."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def create_app(provider: SimulatedProvider) -> web.Application:
    """An aiohttp application serving ``provider``.

    Routes:

    - ``GET /mobile/check/`` (and without the trailing slash): the provider contract.
    - ``GET /_sim/ledger`` (``?billed=1`` for billed entries only), ``GET /_sim/stats``,
      ``GET /_sim/config``, ``POST /_sim/config`` (a JSON object of fields to change),
      ``POST /_sim/reset``: tooling for tests and benchmarks. They take no token and
      never return it; serve them on loopback only.
    """

    async def check(request: web.Request) -> web.Response:
        query = request.query
        token = request.headers.get("token") or query.get("token")
        reply = await provider.handle(query.get("mobile"), token)
        return web.Response(
            body=reply.body,
            status=reply.http_status,
            content_type=reply.content_type,
            charset="utf-8",
        )

    async def get_ledger(request: web.Request) -> web.Response:
        billed_only = request.query.get("billed", "").lower() in ("1", "true", "yes")
        return _json([e.to_dict() for e in provider.ledger(billed_only=billed_only)])

    async def get_stats(request: web.Request) -> web.Response:
        return _json(provider.stats().to_dict())

    async def get_config(request: web.Request) -> web.Response:
        return _json(provider.config.public_dict())

    async def post_config(request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError:
            return _json({"error": "body must be a JSON object"}, status=400)
        try:
            new = provider.update_config(**changes_from_json(payload))
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(new.public_dict())

    async def post_reset(request: web.Request) -> web.Response:
        provider.reset()
        return _json(provider.stats().to_dict())

    app = web.Application()
    app[PROVIDER_KEY] = provider
    app.router.add_get("/mobile/check/", check, allow_head=False)
    app.router.add_get("/mobile/check", check, allow_head=False)
    app.router.add_get("/_sim/ledger", get_ledger, allow_head=False)
    app.router.add_get("/_sim/stats", get_stats, allow_head=False)
    app.router.add_get("/_sim/config", get_config, allow_head=False)
    app.router.add_post("/_sim/config", post_config)
    app.router.add_post("/_sim/reset", post_reset)
    return app
