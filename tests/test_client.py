"""The provider client against the simulator over real loopback HTTP.

The main behaviour (statuses, error codes, retries, fatal stops, back-off, timeouts,
restarts, the ledger reconciling with the results) runs against ``SimulatorServer`` on
127.0.0.1; ``httpx.MockTransport`` covers only bodies and statuses the simulator never
sends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator
from typing import Any

import httpx
import pytest

from mobile_status_dagster.core.client import (
    AsyncMobileStatusClient,
    CheckResult,
    ClientSettings,
    MobileStatusClient,
    Secret,
)
from mobile_status_dagster.core.client import async_client as async_client_module
from mobile_status_dagster.core.client import settings as settings_module
from mobile_status_dagster.core.errors import (
    ConfigurationError,
    ConnectFailedError,
    ConnectionLostError,
    FatalProviderError,
    InsufficientBalanceError,
    InvalidTokenError,
    MalformedResponseError,
    MobileStatusError,
    NumberRejectedError,
    OperatorTimeoutError,
    ProviderInternalError,
    RateLimitedError,
    RequeryTooSoonError,
    ResponseTimeoutError,
    ServerError,
    ServiceNotEnabledError,
    UnexpectedHTTPStatusError,
    UnknownProviderError,
)
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.simulator import (
    ODD_CODE,
    LedgerEntry,
    SimulatorConfig,
    SimulatorServer,
    number_truth,
)
from tests.support import numbers_with_status, sample_numbers

TOKEN = "CLIENTtest0SECRET0a1b2c3d4e5f6Zq"
"""The account token in these tests: distinctive, so a leak is found by substring."""
MOBILE = "13912345678"

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    """This module's simulator accepts :data:`TOKEN` (and answers at once)."""
    return SimulatorConfig(latency_ms=0, token=TOKEN)


def settings_for(base_url: str, **changes: Any) -> ClientSettings:
    """Settings for fast tests: short backoff, a few retries."""
    values: dict[str, Any] = {
        "base_url": base_url,
        "token": TOKEN,
        "max_retries": 2,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "timeout_s": 5.0,
        "max_concurrency": 8,
    }
    return ClientSettings(**(values | changes))


async def collect(
    settings: ClientSettings,
    mobiles: Iterable[str] | AsyncIterator[str],
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[list[CheckResult], MobileStatusError | None]:
    """Every result ``check_many`` yields, and the fatal error it raised, if any."""
    results: list[CheckResult] = []
    async with AsyncMobileStatusClient(settings, transport=transport) as client:
        try:
            async for result in client.check_many(mobiles):
                results.append(result)
        except FatalProviderError as error:
            return results, error
    return results, None


def check_many(
    settings: ClientSettings,
    mobiles: Iterable[str],
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[CheckResult]:
    """Results for ``mobiles``; fails the test on a fatal error."""
    results, error = asyncio.run(collect(settings, mobiles, transport))
    assert error is None, repr(error)
    return results


def check_one(
    settings: ClientSettings, mobile: str, transport: httpx.AsyncBaseTransport | None = None
) -> CheckResult:
    """``AsyncMobileStatusClient.check`` in a fresh event loop."""

    async def go() -> CheckResult:
        async with AsyncMobileStatusClient(settings, transport=transport) as client:
            return await client.check(mobile)

    return asyncio.run(go())


def mock(handler: Handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def json_response(body: object, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body, ensure_ascii=False).encode())


def answer(check: int | str = "1", **extra: object) -> httpx.Response:
    body = {"code": 2000, "msg": "ok", "order_number": "A" * 32, "check": check}
    return json_response(body | {"operator": "CM"} | extra)


def by_mobile(entries: Iterable[LedgerEntry]) -> dict[str | None, list[LedgerEntry]]:
    grouped: dict[str | None, list[LedgerEntry]] = collections.defaultdict(list)
    for entry in sorted(entries, key=lambda e: e.seq):
        grouped[entry.mobile].append(entry)
    return grouped


def max_per_window(times: Iterable[float], window_s: float = 1.0) -> int:
    """The most timestamps falling in any half-open window ``[t, t + window_s)``."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def assert_token_absent(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text


def exception_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


class RecordingTransport(httpx.AsyncBaseTransport):
    """Real HTTP (httpx's own transport) that keeps each request and counts concurrency."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"token": ""}, "token"),
        ({"token": None}, "token"),
        ({"base_url": None}, "base_url"),
        ({"token": Secret("")}, "token"),
        ({"token": "has space"}, "token"),
        ({"token": "tab\there"}, "token"),
        ({"token": "非ascii"}, "token"),
        ({"base_url": ""}, "base_url"),
        ({"base_url": "   "}, "base_url"),
        ({"base_url": "ftp://provider.example.com"}, "base_url"),
        ({"base_url": "provider.example.com"}, "base_url"),
        ({"base_url": "http://"}, "base_url"),
        ({"base_url": "https://provider.example.com/?x=1"}, "base_url"),
        ({"base_url": "https://provider.example.com/#top"}, "base_url"),
        ({"token_placement": "cookie"}, "token_placement"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": -4}, "max_concurrency"),
        ({"max_concurrency": 2.5}, "max_concurrency"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"qps": True}, "qps"),
        ({"timeout_s": True}, "timeout_s"),
        ({"max_retries": False}, "max_retries"),
        ({"qps": 0}, "qps"),
        ({"qps": -1.0}, "qps"),
        ({"qps": float("nan")}, "qps"),
        ({"qps": float("inf")}, "qps"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"backoff_initial_s": -0.1}, "backoff_initial_s"),
        ({"backoff_max_s": float("nan")}, "backoff_max_s"),
    ],
)
def test_invalid_settings_name_the_setting(changes: dict[str, Any], setting: str) -> None:
    values: dict[str, Any] = {"base_url": "https://provider.example.com", "token": TOKEN}
    with pytest.raises(ConfigurationError) as caught:
        ClientSettings(**(values | changes))
    assert caught.value.setting == setting
    assert str(caught.value).startswith(f"{setting}: ")
    assert isinstance(caught.value, ValueError)
    assert_token_absent(exception_text(caught.value))


def test_valid_settings_are_normalized_and_hide_the_token() -> None:
    settings = ClientSettings(
        base_url="  https://provider.example.com/  ", token=TOKEN, qps=5, max_retries=0
    )
    assert settings.base_url == "https://provider.example.com"
    assert isinstance(settings.token, Secret)
    assert settings.secret.reveal() == TOKEN
    assert settings == ClientSettings(
        base_url="https://provider.example.com", token=TOKEN, qps=5, max_retries=0
    )
    shown = [repr(settings), str(settings), repr(settings.secret), str(settings.secret)]
    shown.append(f"{settings.secret} {settings.secret!r} {settings}")
    assert_token_absent(*shown)


def test_plain_http_to_a_remote_host_warns_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "_warned_hosts", set())
    caplog.set_level(logging.WARNING)
    ClientSettings(base_url="http://example.com", token=TOKEN)
    ClientSettings(base_url="http://example.com/", token=TOKEN, max_retries=1)
    for quiet in (
        "https://example.com",
        "http://127.0.0.1:8138",
        "http://localhost:1",
        "http://[::1]:2",
    ):
        ClientSettings(base_url=quiet, token=TOKEN)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "example.com" in warnings[0].getMessage()
    assert "https" in warnings[0].getMessage()
    assert_token_absent(caplog.text)


# -- answers against the simulator -----------------------------------------------------


def test_every_status_is_read_with_its_operator_order_number_and_billing(
    simulator: SimulatorServer,
) -> None:
    mobiles = {check: numbers_with_status(check, 3) for check in range(6)}
    results = check_many(
        settings_for(simulator.base_url), [m for ms in mobiles.values() for m in ms]
    )
    ledger = {e.mobile: e for e in simulator.provider.ledger()}
    assert len(results) == 18 == len(ledger)
    for result in results:
        check, operator = number_truth(result.mobile)
        entry = ledger[result.mobile]
        assert result.status is Status(check)
        assert result.operator == operator
        assert result.order_number == entry.order_number
        assert result.order_number is not None
        assert result.code == 2000
        assert result.message == "查询成功"
        assert result.error is None
        assert result.answered
        assert result.billed is (check != 0) is entry.billed
        assert not result.possibly_billed
        (attempt,) = result.attempts
        assert attempt.http_status == 200
        assert attempt.billed is result.billed
        assert attempt.attempt == 1


@pytest.mark.parametrize("field_style", ["lower", "title", "upper"])
@pytest.mark.parametrize("check_as_int", [False, True])
def test_field_names_are_case_insensitive_and_check_may_be_a_number(
    simulator: SimulatorServer, field_style: str, check_as_int: bool
) -> None:
    simulator.provider.update_config(field_style=field_style, check_as_int=check_as_int)
    mobiles = [numbers_with_status(check, 1)[0] for check in range(6)]
    results = check_many(settings_for(simulator.base_url), [*mobiles, "1234"])
    outcome = {r.mobile: r for r in results}
    for mobile in mobiles:
        assert outcome[mobile].status is Status(number_truth(mobile)[0])
        assert outcome[mobile].operator == number_truth(mobile)[1]
        assert outcome[mobile].message == "查询成功"
        assert outcome[mobile].order_number is not None
    assert isinstance(outcome["1234"].error, NumberRejectedError)


@pytest.mark.parametrize(
    ("body", "status", "operator"),
    [
        ({"Code": 2000, "Msg": "ok", "Check": 2, "Operator": "CU"}, Status.POWERED_OFF, "CU"),
        ({"CODE": "2000", "CHECK": "4", "OPERATOR": "ct"}, Status.VACANT, "CT"),
        ({"code": 2000, "check": " 5 ", "operator": " cm "}, Status.CANCELLED, "CM"),
        ({"cOdE": 2000, "ChEcK": 0}, Status.UNKNOWN, None),
    ],
)
def test_mock_field_spellings_and_types(
    body: dict[str, object], status: Status, operator: str | None
) -> None:
    result = check_one(
        settings_for("http://127.0.0.1:9"), MOBILE, mock(lambda _: json_response(body))
    )
    assert result.status is status
    assert result.operator == operator
    assert result.billed is status.billed


# -- provider error codes --------------------------------------------------------------


@pytest.mark.parametrize("error_http_status", [200, 202])
def test_invalid_token_is_fatal_and_not_retried(
    simulator: SimulatorServer, error_http_status: int
) -> None:
    simulator.provider.update_config(error_http_status=error_http_status)
    settings = settings_for(simulator.base_url, token="WRONG" + TOKEN[5:], max_retries=5)
    with pytest.raises(InvalidTokenError) as caught:
        check_one(settings, MOBILE)
    assert caught.value.provider_code == 4001
    assert "MOBILE_STATUS_TOKEN" in str(caught.value)
    (entry,) = simulator.provider.ledger()
    assert entry.code == 4001
    assert entry.http_status == error_http_status
    assert not entry.token_ok


@pytest.mark.parametrize("error_http_status", [200, 202])
def test_service_not_enabled_is_fatal(simulator: SimulatorServer, error_http_status: int) -> None:
    simulator.provider.update_config(disabled=True, error_http_status=error_http_status)
    with pytest.raises(ServiceNotEnabledError):
        check_one(settings_for(simulator.base_url, max_retries=5), MOBILE)
    assert [e.code for e in simulator.provider.ledger()] == [4004]


@pytest.mark.parametrize("error_http_status", [200, 202])
def test_insufficient_balance_is_fatal(simulator: SimulatorServer, error_http_status: int) -> None:
    simulator.provider.update_config(balance=0, error_http_status=error_http_status)
    with pytest.raises(InsufficientBalanceError) as caught:
        check_one(settings_for(simulator.base_url, max_retries=5), MOBILE)
    assert "Top up" in str(caught.value)
    assert [e.code for e in simulator.provider.ledger()] == [4002]


@pytest.mark.parametrize("error_http_status", [200, 202])
def test_rejected_number_is_recorded_and_not_retried(
    simulator: SimulatorServer, error_http_status: int
) -> None:
    simulator.provider.update_config(error_http_status=error_http_status)
    result = check_one(settings_for(simulator.base_url, max_retries=5), "1391234567")
    assert isinstance(result.error, NumberRejectedError)
    assert (result.status, result.code, result.message) == (None, 4003, "手机号码格式错误")
    assert len(result.attempts) == 1
    assert result.attempts[0].http_status == error_http_status
    assert not result.billed
    assert not result.possibly_billed
    assert len(simulator.provider.ledger()) == 1


@pytest.mark.parametrize("error_http_status", [200, 202])
def test_undocumented_code_is_recorded_verbatim_and_not_retried(
    simulator: SimulatorServer, error_http_status: int
) -> None:
    simulator.provider.update_config(odd_code_rate=1.0, error_http_status=error_http_status)
    result = check_one(settings_for(simulator.base_url, max_retries=5), MOBILE)
    assert isinstance(result.error, UnknownProviderError)
    assert not isinstance(result.error, FatalProviderError)
    assert (result.code, result.message) == (ODD_CODE, "未知错误")
    assert result.error.provider_code == ODD_CODE
    assert len(result.attempts) == 1
    assert [e.code for e in simulator.provider.ledger()] == [ODD_CODE]


@pytest.mark.parametrize("error_http_status", [200, 202])
@pytest.mark.parametrize("max_retries", [0, 3])
@pytest.mark.parametrize(
    ("rate", "error_type", "code", "http_status"),
    [
        ("internal_error_rate", ProviderInternalError, 5000, None),
        ("operator_timeout_rate", OperatorTimeoutError, 5002, None),
        ("http_500_rate", ServerError, None, 500),
        ("malformed_rate", MalformedResponseError, None, 200),
    ],
)
def test_retryable_failures_stop_after_max_retries(
    simulator: SimulatorServer,
    rate: str,
    error_type: type[MobileStatusError],
    code: int | None,
    http_status: int | None,
    max_retries: int,
    error_http_status: int,
) -> None:
    simulator.provider.update_config(**{rate: 1.0}, error_http_status=error_http_status)
    result = check_one(settings_for(simulator.base_url, max_retries=max_retries), MOBILE)
    assert isinstance(result.error, error_type)
    assert result.error.retryable
    assert result.status is None
    assert result.code == code
    assert [a.attempt for a in result.attempts] == list(range(1, max_retries + 2))
    for attempt in result.attempts:
        assert isinstance(attempt.error, error_type)
        assert attempt.http_status == (http_status or error_http_status)
        assert not attempt.billed
        assert not attempt.possibly_billed
    ledger = simulator.provider.ledger()
    assert len(ledger) == max_retries + 1
    assert not any(e.billed for e in ledger)


@pytest.mark.parametrize("error_http_status", [200, 202])
def test_operator_refusal_exhausted_is_recorded_as_unknown(
    simulator: SimulatorServer, error_http_status: int
) -> None:
    simulator.provider.update_config(operator_refused_rate=1.0, error_http_status=error_http_status)
    result = check_one(settings_for(simulator.base_url, max_retries=3), MOBILE)
    assert result.status is Status.UNKNOWN
    assert result.error is None
    assert result.answered
    assert (result.code, result.order_number) == (5001, None)
    assert len(result.attempts) == 4
    assert not result.billed
    assert len(simulator.provider.ledger()) == 4


@pytest.mark.parametrize(
    "rate", ["http_500_rate", "malformed_rate", "internal_error_rate", "operator_timeout_rate"]
)
def test_retryable_failures_are_retried_until_an_answer(
    simulator: SimulatorServer, rate: str
) -> None:
    """Half the calls fail; one at a time, the simulator's seeded draws are reproducible."""
    simulator.provider.update_config(**{rate: 0.5})
    mobiles = sample_numbers(30, seed=3)
    results = check_many(
        settings_for(simulator.base_url, max_retries=3, max_concurrency=1), mobiles
    )
    assert sorted(r.mobile for r in results) == sorted(mobiles)
    recovered = 0
    for result in results:
        *failed, last = result.attempts
        assert all(a.error is not None and a.error.retryable for a in failed)
        if last.error is None:
            assert result.status is Status(number_truth(result.mobile)[0])
            recovered += bool(failed)
        else:
            assert len(result.attempts) == 4
    assert recovered > 0
    assert len(simulator.provider.ledger()) == sum(len(r.attempts) for r in results)


def test_requery_too_soon_is_retried_later(simulator: SimulatorServer) -> None:
    simulator.provider.update_config(requery_min_interval_s=0.2)
    settings = settings_for(
        simulator.base_url, max_retries=20, backoff_initial_s=0.02, backoff_max_s=0.1
    )

    async def twice() -> tuple[CheckResult, CheckResult]:
        async with AsyncMobileStatusClient(settings) as client:
            return await client.check(MOBILE), await client.check(MOBILE)

    first, second = asyncio.run(twice())
    assert first.status is second.status is Status(number_truth(MOBILE)[0])
    assert len(first.attempts) == 1
    assert isinstance(second.attempts[0].error, RequeryTooSoonError)
    assert second.attempts[0].code == 4030
    assert second.attempts[-1].error is None
    assert [e.code for e in simulator.provider.ledger()].count(2000) == 2


# -- fatal errors in check_many -----------------------------------------------------------


def test_fatal_error_stops_new_calls_and_delivers_every_paid_answer(
    simulator: SimulatorServer,
) -> None:
    simulator.provider.update_config(latency_ms=20, balance=10)
    mobiles = sample_numbers(80, seed=5)
    settings = settings_for(simulator.base_url, max_concurrency=4)
    results, error = asyncio.run(collect(settings, mobiles))
    assert isinstance(error, InsufficientBalanceError)
    delivered = {r.order_number for r in results if r.order_number}
    billed = simulator.provider.ledger(billed_only=True)
    assert len(billed) == 10
    assert {e.order_number for e in billed} <= delivered
    assert len({r.mobile for r in results}) == len(results)
    assert any(isinstance(r.error, InsufficientBalanceError) for r in results)
    ledger = simulator.provider.ledger()
    first_refusal = min(e.seq for e in ledger if e.code == 4002)
    assert sum(e.seq > first_refusal for e in ledger) < 2 * settings.max_concurrency
    assert len(ledger) < len(mobiles) // 2


def test_fatal_error_stops_other_numbers_retrying() -> None:
    calls: collections.Counter[str] = collections.Counter()

    async def handler(request: httpx.Request) -> httpx.Response:
        mobile = request.url.params["mobile"]
        calls[mobile] += 1
        await asyncio.sleep(0.005)
        if mobile == "13800000002" and calls[mobile] > 2:
            return json_response({"code": 4004, "msg": "disabled"})
        return json_response({"code": 5000, "msg": "busy"})

    settings = settings_for("http://127.0.0.1:9", max_retries=50, max_concurrency=2)
    mobiles = ["13800000001", "13800000002", "13800000003"]
    results, error = asyncio.run(collect(settings, mobiles, mock(handler)))
    assert isinstance(error, ServiceNotEnabledError)
    outcome = {r.mobile: r for r in results}
    assert set(outcome) == {"13800000001", "13800000002"}
    assert isinstance(outcome["13800000001"].error, ProviderInternalError)
    assert len(outcome["13800000001"].attempts) < 10
    assert calls["13800000003"] == 0


def test_wrong_base_url_path_is_a_fatal_unexpected_status(simulator: SimulatorServer) -> None:
    settings = settings_for(simulator.base_url + "/v2", max_retries=5)
    with pytest.raises(UnexpectedHTTPStatusError) as caught:
        check_one(settings, MOBILE)
    assert caught.value.http_status == 404
    assert "MOBILE_STATUS_BASE_URL" in str(caught.value)
    results, error = asyncio.run(collect(settings, sample_numbers(20)))
    assert isinstance(error, UnexpectedHTTPStatusError)
    assert len(results) <= settings.max_concurrency
    assert all(len(r.attempts) == 1 for r in results)


# -- rate limiting -------------------------------------------------------------------


def test_provider_qps_refusals_slow_the_client_below_the_limit(simulator: SimulatorServer) -> None:
    limit = 20
    simulator.provider.update_config(qps_limit=limit)
    mobiles = sample_numbers(60, seed=8)

    async def run() -> tuple[list[CheckResult], float | None]:
        settings = settings_for(simulator.base_url, max_concurrency=8)
        async with AsyncMobileStatusClient(settings) as client:
            assert client.current_qps is None
            found = [r async for r in client.check_many(mobiles)]
            return found, client.current_qps

    results, qps = asyncio.run(run())
    assert qps is not None
    assert qps < limit
    assert all(r.status is Status(number_truth(r.mobile)[0]) for r in results)
    assert len(results) == len(mobiles)
    ledger = simulator.provider.ledger()
    refusals = [e.time for e in ledger if e.code == 4029]
    assert refusals
    throttled_attempts = [
        a for r in results for a in r.attempts if isinstance(a.error, RateLimitedError)
    ]
    assert len(throttled_attempts) == len(refusals)
    assert all(a.code == 4029 for a in throttled_attempts)
    settled = min(refusals) + 1.5
    assert max(refusals) < settled
    late = [e.time for e in ledger if e.time >= settled]
    assert len(late) >= 5
    assert max_per_window(late) <= limit
    assert len({e.mobile for e in ledger if e.billed}) == sum(e.billed for e in ledger)


def test_qps_setting_caps_calls_in_every_one_second_window(simulator: SimulatorServer) -> None:
    qps = 20
    check_many(settings_for(simulator.base_url, qps=qps, max_concurrency=8), sample_numbers(45))
    times = [e.time for e in simulator.provider.ledger()]
    assert len(times) == 45
    assert max_per_window(times) <= qps + 1


def test_http_429_is_retried_without_spending_max_retries() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429) if len(calls) == 1 else answer("1")

    result = check_one(settings_for("http://127.0.0.1:9", max_retries=0), MOBILE, mock(handler))
    assert result.status is Status.ONLINE
    first, second = result.attempts
    assert isinstance(first.error, RateLimitedError)
    assert (first.http_status, first.code) == (429, None)
    assert second.error is None


def test_throttled_retries_have_their_own_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(async_client_module, "MAX_THROTTLED_RETRIES", 2)
    result = check_one(
        settings_for("http://127.0.0.1:9", max_retries=0, qps=50),
        MOBILE,
        mock(lambda _: json_response({"code": 4029, "msg": "slow down"})),
    )
    assert isinstance(result.error, RateLimitedError)
    assert len(result.attempts) == 3


def test_at_most_max_concurrency_requests_in_flight(simulator: SimulatorServer) -> None:
    simulator.provider.update_config(latency_ms=20)
    transport = RecordingTransport()
    results = check_many(
        settings_for(simulator.base_url, max_concurrency=3), sample_numbers(24), transport
    )
    assert len(results) == 24
    assert transport.max_in_flight == 3


def test_concurrent_checks_share_max_concurrency_and_queue_outside_the_timeout(
    simulator: SimulatorServer,
) -> None:
    """Waiting for a free slot is not waiting for an answer: nothing queued may time out
    as "possibly billed"."""
    simulator.provider.update_config(latency_ms=100)
    settings = settings_for(simulator.base_url, max_concurrency=2, timeout_s=0.25, max_retries=0)
    mobiles = sample_numbers(8, seed=15)

    async def gathered(transport: httpx.AsyncBaseTransport | None) -> list[CheckResult]:
        async with AsyncMobileStatusClient(settings, transport=transport) as client:
            return list(await asyncio.gather(*(client.check(m) for m in mobiles)))

    for transport in (None, RecordingTransport()):
        results = asyncio.run(gathered(transport))
        assert all(r.status is Status(number_truth(r.mobile)[0]) for r in results)
        assert not any(r.possibly_billed for r in results)
        if isinstance(transport, RecordingTransport):
            assert transport.max_in_flight == 2
    assert len(simulator.provider.ledger()) == 16


# -- transport failures ---------------------------------------------------------------


def test_read_timeout_is_retried_and_marked_possibly_billed(simulator: SimulatorServer) -> None:
    mobile = numbers_with_status(1, 1)[0]
    simulator.provider.update_config(slow_rate=1.0, slow_ms=1000)
    result = check_one(settings_for(simulator.base_url, timeout_s=0.3, max_retries=1), mobile)
    assert isinstance(result.error, ResponseTimeoutError)
    assert result.status is None
    assert result.possibly_billed
    assert not result.billed
    assert all(a.possibly_billed and a.http_status is None for a in result.attempts)
    assert len(result.attempts) == 2
    ledger = simulator.provider.ledger()
    assert [(e.billed, e.fault) for e in ledger] == [(True, "slow")] * 2


def test_connection_refused_is_retried_and_not_possibly_billed(simulator: SimulatorServer) -> None:
    simulator.stop()
    result = check_one(settings_for(simulator.base_url, max_retries=2), MOBILE)
    assert isinstance(result.error, ConnectFailedError)
    assert len(result.attempts) == 3
    assert not result.possibly_billed
    assert not result.billed
    assert simulator.provider.ledger() == []


def test_server_stopped_mid_run_recovers_and_flags_cut_answers(simulator: SimulatorServer) -> None:
    """A request cut by the stop may have been billed: it is flagged possibly billed,
    never reported as "could not connect", and every number is answered after the restart."""
    simulator.provider.update_config(latency_ms=200)
    mobiles = sample_numbers(12, seed=4)

    def bounce() -> None:
        deadline = time.monotonic() + 10
        while len(simulator.provider.ledger()) < 6 and time.monotonic() < deadline:
            time.sleep(0.002)
        simulator.stop()
        time.sleep(0.2)
        simulator.start()

    thread = threading.Thread(target=bounce)
    thread.start()
    settings = settings_for(
        simulator.base_url,
        max_concurrency=4,
        max_retries=12,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    try:
        results = check_many(settings, mobiles)
    finally:
        thread.join()
    assert sorted(r.mobile for r in results) == sorted(mobiles)
    assert all(r.status is Status(number_truth(r.mobile)[0]) for r in results)
    attempts = [a for r in results for a in r.attempts]
    assert any(isinstance(a.error, ConnectionLostError) for a in attempts)
    assert any(isinstance(a.error, ConnectFailedError) for a in attempts)
    ledger = by_mobile(simulator.provider.ledger())
    for result in results:
        entries = ledger[result.mobile]
        cut = [a for a in result.attempts if isinstance(a.error, ConnectionLostError)]
        assert all(a.possibly_billed for a in cut)
        assert all(
            isinstance(a.error, ConnectFailedError | ConnectionLostError)
            for a in result.attempts[:-1]
        )
        # A cut request may or may not have reached the provider; a refused one never did.
        unseen = [e for e in entries if e.order_number != result.order_number]
        assert len(entries) - len(unseen) == 1
        assert len(unseen) <= len(cut)


def test_ledger_reconciles_with_results_under_mixed_faults(simulator: SimulatorServer) -> None:
    """Per number, the provider's entries and the client's attempts line up one to one."""
    simulator.provider.update_config(
        seed=11,
        http_500_rate=0.04,
        malformed_rate=0.04,
        internal_error_rate=0.04,
        operator_refused_rate=0.04,
        operator_timeout_rate=0.04,
        odd_code_rate=0.02,
        slow_rate=0.04,
        slow_ms=1000,
        error_http_status=202,
    )
    mobiles = sample_numbers(200, seed=12)
    results = check_many(settings_for(simulator.base_url, timeout_s=0.3, max_retries=3), mobiles)
    assert sorted(r.mobile for r in results) == sorted(mobiles)
    ledger = by_mobile(simulator.provider.ledger())
    billed_unseen = 0
    kinds: collections.Counter[str] = collections.Counter()
    for result in results:
        entries = ledger[result.mobile]
        assert len(entries) == len(result.attempts)
        for entry, attempt in zip(entries, result.attempts, strict=True):
            kinds[type(attempt.error).__name__] += 1
            if attempt.possibly_billed:
                assert isinstance(attempt.error, ResponseTimeoutError)
                assert (entry.code, entry.fault) == (2000, "slow")
                billed_unseen += entry.billed
                continue
            assert entry.http_status == attempt.http_status
            assert entry.code == attempt.code
            assert entry.order_number == attempt.order_number
            assert entry.billed == attempt.billed
            if attempt.status is not None:
                assert (entry.check, entry.operator) == (attempt.status.value, attempt.operator)
        last = result.attempts[-1]
        assert result.order_number == last.order_number
        if isinstance(last.error, UnknownProviderError):
            assert result.code == ODD_CODE
    all_entries = simulator.provider.ledger()
    assert sum(e.billed for e in all_entries) == sum(r.billed for r in results) + billed_unseen
    assert sum(r.billed for r in results) == sum(a.billed for r in results for a in r.attempts)
    for kind in ("NoneType", "ServerError", "MalformedResponseError", "ResponseTimeoutError"):
        assert kinds[kind] > 0, kinds


# -- token placement and secrecy --------------------------------------------------------


@pytest.mark.parametrize("placement", ["header", "query"])
def test_token_placement(simulator: SimulatorServer, placement: str) -> None:
    transport = RecordingTransport()
    settings = settings_for(simulator.base_url, token_placement=placement)
    result = check_one(settings, MOBILE, transport)
    assert result.status is Status(number_truth(MOBILE)[0])
    (request,) = transport.requests
    assert request.url.path == "/mobile/check/"
    assert request.url.params["mobile"] == MOBILE
    if placement == "header":
        assert request.headers["token"] == TOKEN
        assert "token" not in request.url.params
        assert TOKEN not in str(request.url)
    else:
        assert request.url.params["token"] == TOKEN
        assert "token" not in request.headers


def test_token_never_appears_in_debug_logs(
    simulator: SimulatorServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "_warned_hosts", set())
    caplog.set_level(logging.DEBUG)
    simulator.provider.update_config(
        http_500_rate=0.15,
        malformed_rate=0.15,
        operator_refused_rate=0.1,
        odd_code_rate=0.1,
        slow_rate=0.1,
        slow_ms=600,
    )
    mobiles = [*sample_numbers(30, seed=21), "1391234"]
    for placement in ("header", "query"):
        settings = settings_for(simulator.base_url, token_placement=placement, timeout_s=0.2)
        check_many(settings, mobiles)
    simulator.provider.update_config(token="SOMEONE0ELSES0TOKEN0000000000000")
    for placement in ("header", "query"):
        with pytest.raises(InvalidTokenError):
            check_one(settings_for(simulator.base_url, token_placement=placement), MOBILE)
    ClientSettings(base_url="http://example.com", token=TOKEN)

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=f"bad {request.url} {request.headers}".encode())

    check_one(settings_for("http://127.0.0.1:9", token_placement="query"), MOBILE, mock(echo))
    messages = [r.getMessage() for r in caplog.records]
    assert any("attempt 1 failed" in m for m in messages)
    assert any("status online" in m for m in messages)
    assert any("plain http" in m for m in messages)
    out, err = capfd.readouterr()
    assert_token_absent(caplog.text, *messages, out, err)
    assert_token_absent(*(repr(r.args) for r in caplog.records))


@pytest.mark.parametrize("placement", ["header", "query"])
def test_token_not_in_reprs_errors_or_tracebacks(
    simulator: SimulatorServer, placement: str
) -> None:
    texts: list[str] = []
    settings = settings_for(
        simulator.base_url, token_placement=placement, timeout_s=0.2, max_retries=0
    )
    texts += [repr(settings), repr(AsyncMobileStatusClient(settings))]
    with MobileStatusClient(settings) as sync_client:
        texts.append(repr(sync_client))
    simulator.provider.update_config(
        malformed_rate=0.3, odd_code_rate=0.2, slow_rate=0.2, slow_ms=500
    )
    results = check_many(settings, sample_numbers(20))
    assert any(r.error is not None for r in results)
    texts += [repr(r) for r in results]
    texts += [exception_text(a.error) for r in results for a in r.attempts if a.error]
    simulator.provider.update_config(token="SOMEONE0ELSES0TOKEN0000000000000")
    with pytest.raises(InvalidTokenError) as caught:
        check_one(settings, MOBILE)
    texts.append(exception_text(caught.value))
    simulator.stop()
    refused = check_one(settings, MOBILE)
    assert isinstance(refused.error, ConnectFailedError)
    texts += [repr(refused), exception_text(refused.error)]
    assert_token_absent(*texts)


@pytest.mark.parametrize("placement", ["header", "query"])
@pytest.mark.parametrize(
    "reply",
    [
        lambda text: httpx.Response(200, content=f"<html>denied {text}</html>".encode()),
        lambda text: httpx.Response(202, content=("x" * 40 + text).encode()),
        lambda text: json_response({"code": 2000, "check": "9", "msg": text}),
        lambda text: json_response({"code": 2000, "msg": text}),
        lambda text: json_response([text]),
        lambda text: json_response({"code": 4001, "msg": f"token {text} is invalid"}),
        lambda text: json_response({"code": 4100, "msg": f"bad token {text}"}),
        lambda text: json_response({"code": 2000, "check": "1", "msg": f"ok {text}"}),
    ],
)
def test_a_server_echoing_the_token_never_leaks_it(
    placement: str,
    reply: Callable[[str], httpx.Response],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def handler(request: httpx.Request) -> httpx.Response:
        echoed = request.headers.get("token") or request.url.params["token"]
        assert echoed == TOKEN
        return reply(f"{echoed} {request.url}")

    settings = settings_for("http://127.0.0.1:9", token_placement=placement, max_retries=1)
    texts: list[str] = []
    try:
        result = check_one(settings, MOBILE, mock(handler))
    except MobileStatusError as error:
        texts.append(exception_text(error))
    else:
        texts.append(repr(result))
        texts += [exception_text(a.error) for a in result.attempts if a.error]
    texts.append(caplog.text)
    assert_token_absent(*texts)


SPECIAL_TOKEN = 'Ab+/cd=ef&gh%ij"kl\\mnopqrstuvwxyz'
"""A token with every character that URL and JSON encoding change."""


@pytest.mark.parametrize("as_json", [True, False])
def test_an_echoed_token_is_hidden_in_its_url_and_json_escaped_forms(
    as_json: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url_form = httpx.URL("http://h/", params={"token": SPECIAL_TOKEN}).query.decode()[6:]
    json_form = json.dumps(SPECIAL_TOKEN)[1:-1]
    forms = [SPECIAL_TOKEN, url_form, json_form, json_form.replace("/", "\\/")]
    assert len(set(forms)) == 4

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.query.decode().endswith(url_form)
        echoed = " ".join(forms[1:])
        if as_json:
            return httpx.Response(200, content=b'{"code": 4100, "msg": "' + echoed.encode() + b'"}')
        return httpx.Response(200, content=f"<p>{url_form}</p>".encode())

    settings = settings_for("http://127.0.0.1:9", token=SPECIAL_TOKEN, token_placement="query")
    result = check_one(settings, MOBILE, mock(handler))
    assert isinstance(result.error, UnknownProviderError if as_json else MalformedResponseError)
    texts = [repr(result), exception_text(result.error), caplog.text]
    for form in forms:
        assert all(form not in text for text in texts), form
    assert "***" in str(result.error)


# -- mocked bodies and statuses the simulator never sends ------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'"2000"',
        b"2000",
        b"{}",
        b'{"code": true, "check": "1"}',
        b'{"code": "abc", "check": "1"}',
        b'{"code": 2000.5, "check": "1"}',
        b'{"code": 2000}',
        b'{"code": 2000, "check": null}',
        b'{"code": 2000, "check": "9"}',
        b'{"code": 2000, "check": "online"}',
        b'{"code": 2000, "check": false}',
        b'{"code": 2000, "check": "1"',
        b"\xff\xfe{not utf-8",
        b"<html>502 Bad Gateway</html>",
    ],
)
def test_malformed_bodies_are_retried_then_reported(body: bytes) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, content=body)

    result = check_one(settings_for("http://127.0.0.1:9", max_retries=2), MOBILE, mock(handler))
    assert isinstance(result.error, MalformedResponseError)
    assert "malformed provider response" in str(result.error)
    assert len(calls) == len(result.attempts) == 3
    assert result.status is None
    assert not result.billed


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 418])
def test_unexpected_http_status_is_fatal_and_not_retried(status: int) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, content=b"nope")

    with pytest.raises(UnexpectedHTTPStatusError) as caught:
        check_one(settings_for("http://127.0.0.1:9", max_retries=3), MOBILE, mock(handler))
    assert caught.value.http_status == status
    assert len(calls) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_http_5xx_is_retried_then_answered(status: int) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status) if len(calls) <= 2 else answer(3)

    result = check_one(settings_for("http://127.0.0.1:9", max_retries=2), MOBILE, mock(handler))
    assert result.status is Status.UNAVAILABLE
    assert [a.http_status for a in result.attempts] == [status, status, 200]
    assert isinstance(result.attempts[0].error, ServerError)


def test_transport_exception_from_a_custom_transport_is_a_transport_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    result = check_one(settings_for("http://127.0.0.1:9", max_retries=1), MOBILE, mock(handler))
    assert isinstance(result.error, ResponseTimeoutError)
    assert result.possibly_billed


# -- streaming ---------------------------------------------------------------------------


def test_check_many_accepts_a_generator_and_an_async_generator(simulator: SimulatorServer) -> None:
    mobiles = sample_numbers(40, seed=9)
    settings = settings_for(simulator.base_url, max_concurrency=4)

    def plain() -> Iterator[str]:
        yield from mobiles

    async def asynchronous() -> AsyncIterator[str]:
        for mobile in mobiles:
            await asyncio.sleep(0)
            yield mobile

    from_plain = check_many(settings, plain())
    from_async, error = asyncio.run(collect(settings, asynchronous()))
    assert error is None
    for results in (from_plain, from_async):
        assert sorted(r.mobile for r in results) == sorted(mobiles)
        assert all(r.status is Status(number_truth(r.mobile)[0]) for r in results)
    assert check_many(settings, []) == []
    duplicated = check_many(settings, [MOBILE, MOBILE, MOBILE])
    assert [r.mobile for r in duplicated] == [MOBILE] * 3


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_check_many_reads_its_input_a_little_ahead_only(
    simulator: SimulatorServer, kind: str
) -> None:
    concurrency = 2
    read = 0

    def counted() -> Iterator[str]:
        nonlocal read
        for mobile in sample_numbers(2000, seed=10):
            read += 1
            yield mobile

    async def counted_async() -> AsyncIterator[str]:
        for mobile in counted():
            yield mobile

    async def run() -> tuple[int, int, int]:
        settings = settings_for(simulator.base_url, max_concurrency=concurrency)
        async with AsyncMobileStatusClient(settings) as client:
            stream = client.check_many(counted() if kind == "sync" else counted_async())
            for _ in range(3):
                await anext(stream)
            await asyncio.sleep(0.3)
            read_while_paused = read
            async with asyncio.timeout(5):  # closing with full queues once hung forever
                await stream.aclose()
            calls = len(simulator.provider.ledger())
            await asyncio.sleep(0.1)
            return read_while_paused, calls, len(simulator.provider.ledger())

    read_while_paused, calls_at_close, calls_later = asyncio.run(run())
    assert 3 <= read_while_paused <= 8 * concurrency
    assert calls_at_close <= read_while_paused
    assert calls_later == calls_at_close


def test_closing_check_many_early_cancels_the_rest(simulator: SimulatorServer) -> None:
    simulator.provider.update_config(latency_ms=30)
    settings = settings_for(simulator.base_url, max_concurrency=4)

    async def run() -> int:
        async with asyncio.timeout(5), AsyncMobileStatusClient(settings) as client:
            async with contextlib.aclosing(client.check_many(sample_numbers(500))) as stream:
                async for _ in stream:
                    await asyncio.sleep(0.2)
                    break
            return len(asyncio.all_tasks())

    assert asyncio.run(run()) == 1
    calls = len(simulator.provider.ledger())
    time.sleep(0.1)
    assert len(simulator.provider.ledger()) == calls < 20


def test_breaking_out_of_check_many_stops_calling(simulator: SimulatorServer) -> None:
    """A bare ``break`` leaves closing to the event loop's async-generator finalizer."""
    simulator.provider.update_config(latency_ms=30)

    async def run() -> None:
        settings = settings_for(simulator.base_url, max_concurrency=4)
        async with AsyncMobileStatusClient(settings) as client:
            async for _ in client.check_many(sample_numbers(500)):
                await asyncio.sleep(0.2)
                break

    asyncio.run(asyncio.wait_for(run(), 5))
    calls = len(simulator.provider.ledger())
    time.sleep(0.1)
    assert len(simulator.provider.ledger()) == calls < 20


# -- the blocking client --------------------------------------------------------------


def test_sync_client_check_and_check_many(simulator: SimulatorServer) -> None:
    mobiles = sample_numbers(25, seed=13)
    with MobileStatusClient(settings_for(simulator.base_url, max_concurrency=4)) as client:
        one = client.check(MOBILE)
        many = list(client.check_many(iter(mobiles)))
        again = client.check(mobiles[0])
        first_few = []
        for result in client.check_many(sample_numbers(100, seed=14)):
            first_few.append(result)
            if len(first_few) == 2:
                break
        after_break = client.check(MOBILE)
    assert one.status is after_break.status is Status(number_truth(MOBILE)[0])
    assert sorted(r.mobile for r in many) == sorted(mobiles)
    assert all(r.status is Status(number_truth(r.mobile)[0]) for r in many)
    assert again.status is Status(number_truth(mobiles[0])[0])
    assert len(first_few) == 2


def test_sync_client_raises_fatal_errors(simulator: SimulatorServer) -> None:
    simulator.provider.update_config(balance=3)
    with MobileStatusClient(settings_for(simulator.base_url, max_concurrency=2)) as client:
        delivered: list[CheckResult] = []
        with pytest.raises(InsufficientBalanceError):
            delivered.extend(client.check_many(numbers_with_status(1, 20)))
        with pytest.raises(InsufficientBalanceError):
            client.check(MOBILE)
    assert sum(r.billed for r in delivered) == 3
    assert {e.order_number for e in simulator.provider.ledger(billed_only=True)} <= {
        r.order_number for r in delivered
    }


def test_sync_client_keeps_in_flight_requests_going_while_the_caller_works(
    simulator: SimulatorServer,
) -> None:
    """A caller slower than the timeout must not turn arrived answers into timeouts
    (each of which would be retried and billed again)."""
    simulator.provider.update_config(latency_ms=30, jitter_ms=25)
    mobiles = numbers_with_status(1, 8)
    settings = settings_for(simulator.base_url, max_concurrency=4, timeout_s=0.15)
    results = []
    with MobileStatusClient(settings) as client:
        for result in client.check_many(mobiles):
            results.append(result)
            time.sleep(0.25)
    assert sorted(r.mobile for r in results) == sorted(mobiles)
    assert [len(r.attempts) for r in results] == [1] * 8
    assert all(r.status is Status.ONLINE for r in results)
    assert len(simulator.provider.ledger(billed_only=True)) == 8


def test_sync_client_close_stops_an_unfinished_check_many(simulator: SimulatorServer) -> None:
    simulator.provider.update_config(latency_ms=20)
    client = MobileStatusClient(settings_for(simulator.base_url, max_concurrency=4))
    stream = client.check_many(sample_numbers(300))
    assert next(stream).answered
    client.close()
    client.close()
    calls = len(simulator.provider.ledger())
    time.sleep(0.1)
    assert len(simulator.provider.ledger()) == calls < 50
    assert isinstance(stream, Generator)
    stream.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.check(MOBILE)
