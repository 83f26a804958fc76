"""A blocking wrapper over the async client, for scripts and notebooks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Self

import httpx

from mobile_status_dagster.client.async_client import AsyncMobileStatusClient
from mobile_status_dagster.client.results import CheckResult
from mobile_status_dagster.client.settings import ClientSettings


class MobileStatusClient:
    """Blocking client: the same behaviour as :class:`AsyncMobileStatusClient`.

    It owns one event loop for its lifetime; requests in flight during
    :meth:`check_many` progress while the caller waits for the next result.

    Example::

        with MobileStatusClient(ClientSettings(base_url=url, token=token)) as client:
            print(client.check("13912345678").status)
            for result in client.check_many(["13912345678", "18612345678"]):
                print(result.mobile, result.status)
    """

    def __init__(
        self, settings: ClientSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._runner = asyncio.Runner()
        self._client = AsyncMobileStatusClient(settings, transport=transport)

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
        """Close the connection pool and the event loop."""
        try:
            self._runner.run(self._client.aclose())
        finally:
            self._runner.close()

    def check(self, mobile: str) -> CheckResult:
        """Check one number (see :meth:`AsyncMobileStatusClient.check`)."""
        return self._runner.run(self._client.check(mobile))

    def check_many(self, mobiles: Iterable[str]) -> Iterator[CheckResult]:
        """Yield results as they complete (see :meth:`AsyncMobileStatusClient.check_many`)."""
        stream = self._client.check_many(mobiles)

        async def next_result() -> CheckResult:
            return await anext(stream)

        try:
            while True:
                try:
                    yield self._runner.run(next_result())
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(stream.aclose())
