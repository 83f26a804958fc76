"""The aiohttp application: the provider's endpoint plus guarded admin endpoints."""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from mobile_status_dagster.simulator.config import changes_from_json
from mobile_status_dagster.simulator.provider import SimulatedProvider

PROVIDER_KEY: web.AppKey[SimulatedProvider] = web.AppKey("provider", SimulatedProvider)
"""Where :func:`create_app` keeps the provider on the application."""

ADMIN_HEADER = "X-Sim-Admin"
"""The request header that carries the admin token to ``/_sim/...``."""

LOOPBACK_NAMES: frozenset[str] = frozenset({"localhost", "127.0.0.1", "::1"})
"""Names a loopback-bound simulator answers its admin endpoints under (with its port)."""

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - recognised, not bound

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_admin_token() -> str:
    """A fresh random admin token (``secrets.token_urlsafe``, 256 bits)."""
    return secrets.token_urlsafe(32)


def parse_host(header: str | None) -> tuple[str, int] | None:
    """``(host, port)`` of a ``Host`` header (``host`` lower case, IPv6 without brackets;
    port 80 when absent), or None when it is missing or malformed."""
    if not header:
        return None
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        return None  # an IPv6 address must be bracketed in a Host header
    else:
        host, port_text = text, ""
    if not host:
        return None
    if not port_text:
        return host, 80
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class AdminGuard:
    """Who may use the admin endpoints: requests naming this server in ``Host`` and
    carrying the admin token in :data:`ADMIN_HEADER`; POSTs must be ``application/json``.

    Each check stops a browser attack on a developer's machine: ``Host`` stops DNS
    rebinding (a page whose name now resolves to 127.0.0.1), the token and the JSON
    content type stop cross-site requests (a form or ``text/plain`` POST needs no CORS
    preflight; a custom header or a JSON body does, and the simulator allows none).
    """

    token: str
    """The admin token, compared in constant time."""
    port: int
    """The bound port, which ``Host`` must name."""
    names: frozenset[str] = LOOPBACK_NAMES
    """Accepted host names and addresses (lower case, IPv6 without brackets)."""
    any_ip: bool = False
    """Bound to a wildcard address: any IP literal is also accepted (never a DNS name)."""

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or len(self.token) < 16:
            raise ValueError("the admin token must be a string of at least 16 characters")

    @classmethod
    def for_address(
        cls, token: str, address: str, port: int, names: Iterable[str] = ()
    ) -> AdminGuard:
        """The guard of a server bound to ``(address, port)``, also answering ``names``
        (the ``--host`` it was started with, say)."""
        bound = address.strip("[]").lower()
        accepted = {bound, *(n.strip("[]").lower() for n in names)} - _WILDCARDS
        wildcard = bound in _WILDCARDS
        loopback = _is_ip(bound) and ipaddress.ip_address(bound).is_loopback
        if loopback or wildcard:
            accepted |= LOOPBACK_NAMES
        return cls(token, port, frozenset(accepted), any_ip=wildcard)

    def host_ok(self, header: str | None) -> bool:
        """Whether a ``Host`` header names this server."""
        parsed = parse_host(header)
        if parsed is None:
            return False
        host, port = parsed
        if port != self.port:
            return False
        return host in self.names or (self.any_ip and _is_ip(host))

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the admin token."""
        if not given:
            return False
        return hmac.compare_digest(
            given.encode("utf-8", "replace"), self.token.encode("utf-8", "replace")
        )

    def refusal(self, request: web.Request) -> web.Response | None:
        """The error response for a request the admin endpoints refuse, else None."""
        if not self.host_ok(request.headers.get("Host")):
            return _json({"error": "Host does not name this simulator"}, status=421)
        if not self.token_ok(request.headers.get(ADMIN_HEADER)):
            return _json({"error": f"missing or wrong {ADMIN_HEADER} admin token"}, status=401)
        if request.method == "POST" and request.content_type != "application/json":
            return _json({"error": "Content-Type must be application/json"}, status=415)
        return None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def create_app(provider: SimulatedProvider, guard: AdminGuard | None = None) -> web.Application:
    """An aiohttp application serving ``provider``.

    Routes:

    - ``GET /mobile/check/`` (and without the trailing slash): the provider contract,
      with the provider's account token; nothing else is checked there.
    - ``GET /_sim/ledger`` (``?billed=1`` for billed entries only), ``GET /_sim/stats``,
      ``GET /_sim/config``, ``POST /_sim/config`` (a JSON object of fields to change;
      never ``token`` or ``ledger_path``), ``POST /_sim/reset``: tooling for tests and
      benchmarks, behind ``guard`` (``Host``, admin token, JSON POSTs); not served at
      all without a guard. They never return the account token.
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
    if guard is None:
        return app
    admin = guard

    def guarded(handler: Handler) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            refused = admin.refusal(request)
            return refused if refused is not None else await handler(request)

        return wrapper

    app.router.add_get("/_sim/ledger", guarded(get_ledger), allow_head=False)
    app.router.add_get("/_sim/stats", guarded(get_stats), allow_head=False)
    app.router.add_get("/_sim/config", guarded(get_config), allow_head=False)
    app.router.add_post("/_sim/config", guarded(post_config))
    app.router.add_post("/_sim/reset", guarded(post_reset))
    return app
