"""The asynchronous provider client: concurrency, pacing, retries, typed outcomes."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from mobile_status_dagster.core.client.budget import ChargeBudget
from mobile_status_dagster.core.client.ratelimit import RateLimiter
from mobile_status_dagster.core.client.response import ACCEPT_ENCODING, read_answer, read_body
from mobile_status_dagster.core.client.results import Attempt, CheckResult
from mobile_status_dagster.core.client.settings import ClientSettings
from mobile_status_dagster.core.errors import (
    BudgetExhaustedError,
    ConnectFailedError,
    ConnectionLostError,
    FatalProviderError,
    MobileStatusError,
    OperatorRefusedError,
    ProviderError,
    RateLimitedError,
    ResponseTimeoutError,
    TransportError,
)
from mobile_status_dagster.core.numbers import mask
from mobile_status_dagster.core.status import Status

log = logging.getLogger("mobile_status_dagster.core.client")

CHECK_PATH = "/mobile/check/"
#: 4029 means "slow down", not "this number failed": it gets its own, larger bound.
MAX_THROTTLED_RETRIES = 20
_SENTINEL = object()
#: The feeder's last item on the results queue: no worker starts after it.
_FED = object()


class AsyncMobileStatusClient:
    """Checks numbers against the provider, many at once.

    Built on httpx's transport API. The default transport is ``httpx-aiohttp``'s:
    httpx's own connection pool spends milliseconds of CPU per request at 64
    connections (encode/httpx#3215), aiohttp's does not. Pass any
    ``httpx.AsyncBaseTransport`` (``httpx.MockTransport``, ``httpx.ASGITransport``)
    to replace it.

    Example::

        settings = ClientSettings(base_url="http://127.0.0.1:8138", token="...")
        async with AsyncMobileStatusClient(settings) as client:
            result = await client.check("13912345678")
            async for result in client.check_many(numbers):
                print(result.mobile, result.status)
    """

    def __init__(
        self, settings: ClientSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._transport = transport or _aiohttp_transport(settings.max_concurrency)
        self._limiter = RateLimiter(settings.qps)
        # Taken before the timeout starts: a request waiting for a connection has not
        # been sent, so it must not time out as "possibly billed".
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._url = httpx.URL(settings.base_url + CHECK_PATH)
        self._timeout = {
            "connect": settings.timeout_s,
            "read": settings.timeout_s,
            "write": settings.timeout_s,
            "pool": settings.timeout_s,
        }
        # Only encodings read by a bounded decoder (aiohttp would also offer br and zstd).
        self._headers = {"accept": "application/json", "accept-encoding": ACCEPT_ENCODING}
        if settings.token_placement == "header":
            self._headers["token"] = settings.secret.reveal()

    def __repr__(self) -> str:
        return f"AsyncMobileStatusClient(base_url={self.settings.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    @property
    def current_qps(self) -> float | None:
        """The pacing rate in force (lowered after 4029 answers); ``None``: unlimited."""
        return self._limiter.qps

    async def check(self, mobile: str) -> CheckResult:
        """Check one number, retrying as the error table says.

        Per-number failures come back in ``result.error``; only errors that stop
        every later call (:class:`~mobile_status_dagster.core.errors.FatalProviderError`)
        are raised.
        """
        result = await self._check(mobile, stop=[])
        if isinstance(result.error, FatalProviderError):
            raise result.error
        return result

    async def check_many(
        self,
        mobiles: Iterable[str] | AsyncIterable[str],
        *,
        on_result: Callable[[CheckResult], None] | None = None,
        budget: ChargeBudget | None = None,
    ) -> AsyncGenerator[CheckResult, None]:
        """Yield one result per number as each completes (not in input order).

        At most ``max_concurrency`` numbers are in flight and only a few more are read
        ahead from ``mobiles``, so neither input nor output is held in memory. Worker
        tasks start as numbers arrive, never more than there are numbers. On a
        fatal error, no new number is started; requests in flight finish and their
        results are yielded, then the error is raised.

        Args:
            mobiles: the numbers, as an iterable or an async iterable.
            on_result: called with each result the moment it completes, before it is
                queued for the consumer: the place to persist paid answers, so that a
                process killed at any moment loses only requests still in flight. If it
                raises, no new number starts and the error is raised after the drain.
            budget: attempts reserve from it before they are sent; a number that
                finds it spent is not sent and comes back with ``BudgetExhaustedError``.
        """
        concurrency = self.settings.max_concurrency
        pending: asyncio.Queue[object] = asyncio.Queue(maxsize=concurrency)
        done: asyncio.Queue[object] = asyncio.Queue(maxsize=2 * concurrency)
        fatal: list[FatalProviderError] = []
        hook_errors: list[BaseException] = []
        # Workers start lazily, in the feeder: one more only when a number would wait for
        # a worker and fewer than max_concurrency exist. So there are never more workers
        # than numbers (3 numbers with max_concurrency=10**8 start 3), and a long input
        # reaches max_concurrency at once, as before. ``idle`` counts workers that will
        # take a queued number: started, or back from one, and not yet holding the next.
        workers: list[asyncio.Task[None]] = []
        idle = 0

        async def feed() -> None:
            try:
                if isinstance(mobiles, AsyncIterable):
                    async for mobile in mobiles:
                        if fatal or hook_errors:
                            break
                        start_worker_if_needed()
                        await pending.put(mobile)
                else:
                    for mobile in mobiles:
                        if fatal or hook_errors:
                            break
                        start_worker_if_needed()
                        await pending.put(mobile)
            finally:
                if not _cancelling():  # when cancelled, nobody may be left to drain the queue
                    for _ in workers:  # no worker starts after this point
                        await pending.put(_SENTINEL)
                    await done.put(_FED)

        def start_worker_if_needed() -> None:
            """Before a number is queued: start a worker if none would be free to take it."""
            nonlocal idle
            if pending.qsize() >= idle and len(workers) < concurrency:
                idle += 1
                workers.append(asyncio.create_task(work()))

        async def work() -> None:
            nonlocal idle
            try:
                while (mobile := await pending.get()) is not _SENTINEL:
                    idle -= 1
                    if not (fatal or hook_errors):
                        result = await self._check(str(mobile), stop=fatal, budget=budget)
                        if isinstance(result.error, FatalProviderError) and not fatal:
                            fatal.append(result.error)
                        if on_result is not None:
                            try:
                                on_result(result)
                            except Exception as error:  # re-raised after the drain
                                hook_errors.append(error)
                        await done.put(result)
                    idle += 1
            finally:
                if not _cancelling():
                    await done.put(_SENTINEL)

        feeder = asyncio.create_task(feed())
        try:
            fed, finished = False, 0
            while not fed or finished < len(workers):
                item = await done.get()
                if item is _FED:
                    fed = True
                elif item is _SENTINEL:
                    finished += 1
                else:
                    assert isinstance(item, CheckResult)
                    yield item
            await asyncio.gather(feeder, *workers)
        finally:
            tasks = [feeder, *workers]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if hook_errors:
            raise hook_errors[0]
        if fatal:
            raise fatal[0]

    async def _check(
        self,
        mobile: str,
        stop: list[FatalProviderError],
        budget: ChargeBudget | None = None,
    ) -> CheckResult:
        """All attempts for one number; no retry once ``stop`` holds a fatal error."""
        attempts: list[Attempt] = []
        retries = throttled = 0
        while True:
            if budget is not None and not await budget.reserve():
                return _unsent(mobile, attempts, BudgetExhaustedError("the run's budget is spent"))
            attempt = await self._attempt(mobile, len(attempts) + 1)
            if budget is not None:
                budget.settle(attempt.billed or attempt.possibly_billed)
            attempts.append(attempt)
            error = attempt.error
            if error is None or not error.retryable:
                break
            if stop:
                return _unsent(mobile, attempts, error)
            if isinstance(error, RateLimitedError):
                self._limiter.throttled()
                throttled += 1
                if throttled > MAX_THROTTLED_RETRIES:
                    break
            else:
                retries += 1
                if retries > self.settings.max_retries:
                    break
            # Throttled retries are paced by the rate limiter; their own backoff stays short.
            await asyncio.sleep(self._backoff(retries if retries else min(throttled, 3)))
        return _result(mobile, attempts)

    def _backoff(self, retry: int) -> float:
        """Exponential backoff with full jitter (spreads retries of a burst apart)."""
        ceiling = min(
            self.settings.backoff_max_s, self.settings.backoff_initial_s * 2 ** (retry - 1)
        )
        return random.uniform(0, ceiling)

    async def _attempt(self, mobile: str, number: int) -> Attempt:
        """One HTTP attempt, once one of ``max_concurrency`` slots is free."""
        async with self._slots:
            return await self._send(mobile, number)

    async def _send(self, mobile: str, number: int) -> Attempt:
        await self._limiter.acquire()
        requested_at = datetime.now(UTC)
        started = time.perf_counter()
        http_status: int | None = None
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                response = await self._transport.handle_async_request(self._request(mobile))
                try:
                    http_status = response.status_code
                    # At most MAX_BODY_BYTES, decompressed; larger is possibly billed.
                    body = await read_body(response, redact=self.settings.secret.reveal())
                finally:
                    await response.aclose()
            answer = read_answer(http_status, body, redact=self.settings.secret.reveal())
        except MobileStatusError as error:
            return self._failed(mobile, number, requested_at, started, http_status, error)
        except (httpx.HTTPError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            transport_error = _transport_error(exc)
            return self._failed(mobile, number, requested_at, started, http_status, transport_error)
        self._limiter.accepted()
        latency_ms = (time.perf_counter() - started) * 1000
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: status %s in %.0f ms", mask(mobile), answer.status.label, latency_ms)
        return Attempt(
            attempt=number,
            requested_at=requested_at,
            latency_ms=latency_ms,
            http_status=http_status,
            code=2000,
            message=answer.message,
            order_number=answer.order_number,
            status=answer.status,
            operator=answer.operator,
            billed=answer.status.billed,
            possibly_billed=False,
            error=None,
        )

    def _failed(
        self,
        mobile: str,
        number: int,
        requested_at: datetime,
        started: float,
        http_status: int | None,
        error: MobileStatusError,
    ) -> Attempt:
        if not isinstance(error, RateLimitedError | TransportError):
            self._limiter.accepted()
        log.debug("%s: attempt %d failed: %s", mask(mobile), number, error)
        return Attempt(
            attempt=number,
            requested_at=requested_at,
            latency_ms=(time.perf_counter() - started) * 1000,
            http_status=http_status,
            code=error.provider_code if isinstance(error, ProviderError) else None,
            message=error.provider_message if isinstance(error, ProviderError) else str(error),
            order_number=None,
            status=None,
            operator=None,
            billed=False,
            possibly_billed=error.possibly_billed,
            error=error,
        )

    def _request(self, mobile: str) -> httpx.Request:
        params = {"mobile": mobile}
        if self.settings.token_placement == "query":
            params["token"] = self.settings.secret.reveal()
        return httpx.Request(
            "GET",
            self._url,
            params=params,
            headers=self._headers,
            extensions={"timeout": self._timeout},
        )


def _cancelling() -> bool:
    """Whether the current task is being cancelled, so its ``finally`` must not block."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _unsent(mobile: str, attempts: list[Attempt], error: MobileStatusError) -> CheckResult:
    """A number left without an answer: the run stopped before it could settle."""
    return CheckResult(mobile, None, None, None, None, str(error), tuple(attempts), error)


def _result(mobile: str, attempts: list[Attempt]) -> CheckResult:
    last = attempts[-1]
    if isinstance(last.error, OperatorRefusedError):
        # The contract: after bounded retries a refused query is recorded as unknown.
        return CheckResult(
            mobile, Status.UNKNOWN, None, None, last.code, last.message, tuple(attempts), None
        )
    return CheckResult(
        mobile=mobile,
        status=last.status,
        operator=last.operator,
        order_number=last.order_number,
        code=last.code,
        message=last.message,
        attempts=tuple(attempts),
        error=last.error,
    )


def _transport_error(exc: BaseException) -> TransportError:
    """Classify a transport failure by whether the request may have reached the provider.

    ``httpx-aiohttp`` maps several aiohttp errors to ``httpx.ConnectTimeout``, so the
    original exception in the cause chain decides, not the mapped type.
    """
    chain = _cause_chain(exc)
    name = type(chain[-1]).__name__
    if any(isinstance(e, aiohttp.ClientConnectorError | httpx.ConnectError) for e in chain):
        return ConnectFailedError(f"could not connect to the provider ({name})")
    if any(
        isinstance(e, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError) for e in chain
    ):
        return ConnectionLostError(f"connection lost after the request was sent ({name})")
    if isinstance(exc, httpx.ConnectTimeout) and not any(
        isinstance(e, aiohttp.ClientError) for e in chain
    ):
        return ConnectFailedError(f"timed out connecting to the provider ({name})")
    if any(isinstance(e, TimeoutError | httpx.TimeoutException) for e in chain):
        return ResponseTimeoutError("no answer within the timeout; the call may have been billed")
    return ConnectionLostError(f"connection lost after the request was sent ({name})")


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _aiohttp_transport(max_connections: int) -> AiohttpTransport:
    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
        client = aiohttp.ClientSession(connector=connector)
        # aiohttp silently resends a GET once when the server drops the connection
        # (RFC 9112 9.3.1): a paid query billed twice, its first answer lost and the
        # attempt misreported as "could not connect". Retries are this client's call
        # (aiohttp's own test client turns this off the same way).
        client._retry_connection = False
        return client

    return AiohttpTransport(client=session)
