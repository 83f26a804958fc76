"""A blocking wrapper over the async client, for scripts and notebooks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from mobile_status_dagster.core.client.async_client import AsyncMobileStatusClient
from mobile_status_dagster.core.client.results import CheckResult
from mobile_status_dagster.core.client.settings import ClientSettings

T = TypeVar("T")


class MobileStatusClient:
    """Blocking client: the same behaviour as :class:`AsyncMobileStatusClient`.

    It owns one event loop for its lifetime, run in a background thread, so requests
    in flight during :meth:`check_many` keep progressing (and keep to their timeouts)
    while the caller works on a result: a loop paused between results would time out
    answers that had already arrived, and the retries would be billed twice.

    Example::

        with MobileStatusClient(ClientSettings(base_url=url, token=token)) as client:
            print(client.check("13912345678").status)
            for result in client.check_many(["13912345678", "18612345678"]):
                print(result.mobile, result.status)
    """

    def __init__(
        self, settings: ClientSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = AsyncMobileStatusClient(settings, transport=transport)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mobile-status-client", daemon=True
        )
        self._thread.start()
        self._closed = False

    def __repr__(self) -> str:
        return f"MobileStatusClient(base_url={self._client.settings.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and the event loop (stops any unfinished ``check_many``)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._client.aclose())
            self._run(self._loop.shutdown_asyncgens())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def check(self, mobile: str) -> CheckResult:
        """Check one number (see :meth:`AsyncMobileStatusClient.check`)."""
        return self._run(self._client.check(mobile))

    def check_many(self, mobiles: Iterable[str]) -> Iterator[CheckResult]:
        """Yield results as they complete (see :meth:`AsyncMobileStatusClient.check_many`).

        ``mobiles`` is read from the client's loop thread, a little ahead of the results.
        """
        stream = self._client.check_many(mobiles)

        async def next_result() -> CheckResult | None:
            return await anext(stream, None)

        try:
            while (result := self._run(next_result())) is not None:
                yield result
        finally:
            if not self._closed:
                self._run(stream.aclose())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the client's loop and wait for it; Ctrl-C cancels it."""
        if self._closed and not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise
