"""Serving the simulator: a shared coroutine, and a background-thread server for tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterable
from types import TracebackType

from aiohttp import web

from mobile_status_dagster.simulator.app import (
    ADMIN_HEADER,
    AdminGuard,
    create_app,
    new_admin_token,
)
from mobile_status_dagster.simulator.config import SimulatorConfig
from mobile_status_dagster.simulator.provider import SimulatedProvider

# aiohttp treats a shutdown timeout of 0 as "wait forever"; this is "don't wait".
_SHUTDOWN_TIMEOUT_S = 0.01
_BACKLOG = 1024


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with SO_REUSEADDR, so a restarted
    server can take the same port back at once."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def url_for(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def guard_for(sock: socket.socket, admin_token: str, names: Iterable[str] = ()) -> AdminGuard:
    """The admin endpoints' guard for a server on the bound ``sock``: ``Host`` must name
    its address (or, on loopback, ``localhost``/``127.0.0.1``/``[::1]``; or one of
    ``names``) with its port, and requests must carry ``admin_token``."""
    host, port = sock.getsockname()[:2]
    return AdminGuard.for_address(admin_token, host, port, names)


async def serve(
    provider: SimulatedProvider,
    sock: socket.socket,
    stop: asyncio.Event,
    on_ready: Callable[[], None] | None = None,
    *,
    admin_token: str,
    host_names: Iterable[str] = (),
) -> None:
    """Serve ``provider`` on the bound ``sock`` until ``stop`` is set.

    The admin endpoints need ``admin_token`` in the ``X-Sim-Admin`` header and a
    ``Host`` naming the bound address (or one of ``host_names``); see
    :class:`~mobile_status_dagster.simulator.app.AdminGuard`.

    No access log (it would cost more than the request). On stop, in-flight
    requests are cancelled and their connections dropped, like a server that
    went away; the socket is closed.
    """
    guard = guard_for(sock, admin_token, host_names)
    runner = web.AppRunner(
        create_app(provider, guard), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        site = web.SockSite(runner, sock, backlog=_BACKLOG)
        await site.start()
        if on_ready is not None:
            on_ready()
        await stop.wait()
    finally:
        await runner.cleanup()
        sock.close()
        provider.close()


class SimulatorServer:
    """The simulator served over real HTTP from a background thread with its own
    event loop, so synchronous tests and other threads can call it.

    The first :meth:`start` binds ``port`` (0 picks a free one); every later
    :meth:`start` binds the same port again, so a test can stop the server
    ("the provider went away") and bring it back at the same URL. The provider,
    with its ledger, counters and balance, survives restarts, and so does the
    admin token.

    The admin endpoints (``/_sim/...``) need :attr:`admin_token` in the
    ``X-Sim-Admin`` header (:attr:`admin_headers`), a ``Host`` naming this server, and
    ``Content-Type: application/json`` on POSTs.

    Example::

        with SimulatorServer(SimulatorConfig(latency_ms=0)) as server:
            httpx.get(f"{server.base_url}/mobile/check/",
                      params={"mobile": "13912345678"}, headers={"token": DEMO_TOKEN})
            httpx.get(f"{server.base_url}/_sim/stats", headers=server.admin_headers)
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        provider: SimulatedProvider | None = None,
        admin_token: str | None = None,
    ) -> None:
        if config is not None and provider is not None:
            raise ValueError("pass either config or provider, not both")
        self._admin_token = admin_token if admin_token is not None else new_admin_token()
        AdminGuard(self._admin_token, 1)  # validate it now, not in the serving thread
        self._provider = provider if provider is not None else SimulatedProvider(config)
        self._host = host
        self._port = port
        self._base_url: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def provider(self) -> SimulatedProvider:
        """The provider's state and config (safe to change while serving)."""
        return self._provider

    @property
    def admin_token(self) -> str:
        """The token the admin endpoints (``/_sim/...``) require in the ``X-Sim-Admin``
        header: random per server unless given to the constructor."""
        return self._admin_token

    @property
    def admin_headers(self) -> dict[str, str]:
        """``{"X-Sim-Admin": admin_token}``, to pass as ``headers=`` to an admin request."""
        return {ADMIN_HEADER: self._admin_token}

    @property
    def port(self) -> int:
        """The bound port (known after the first :meth:`start`)."""
        if self._port == 0:
            raise RuntimeError("the simulator has not been started yet")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``, the provider's base URL."""
        if self._base_url is None:
            raise RuntimeError("the simulator has not been started yet")
        return self._base_url

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._thread is not None

    def start(self) -> None:
        """Bind and serve in a background thread; returns once connections are accepted."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("the simulator is already running")
            sock = bind_socket(self._host, self._port)
            self._port = sock.getsockname()[1]
            self._base_url = url_for(sock)
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._run,
                args=(sock, ready, failure),
                name=f"mobile-status-simulator:{self._port}",
                daemon=True,
            )
            thread.start()
            ready.wait()
            if failure:
                thread.join()
                raise RuntimeError("the simulator failed to start") from failure[0]
            self._thread = thread

    def stop(self) -> None:
        """Stop serving: close the port and drop in-flight connections. Idempotent."""
        with self._lock:
            thread, loop, stop = self._thread, self._loop, self._stop
            if thread is None or loop is None or stop is None:
                return
            if thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(stop.set)
            thread.join()
            self._thread = self._loop = self._stop = None

    def _run(
        self, sock: socket.socket, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(
                self._provider,
                sock,
                self._stop,
                ready.set,
                admin_token=self._admin_token,
                host_names=(self._host,),
            )

        try:
            asyncio.run(main())
        except BaseException as exc:
            sock.close()
            if ready.is_set():
                raise  # died while serving: let threading's excepthook report it
            failure.append(exc)
        finally:
            ready.set()

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
