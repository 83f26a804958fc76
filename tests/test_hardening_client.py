"""Hardening of the provider client against hostile answers (the hardening issue).

1. Deeply nested JSON is a malformed answer, recorded like any other.
2. Provider fields are validated when parsed: status, operator, order number, message,
   code. A billed answer with a dirty operator or order number stays billed and kept,
   and every string the client returns is clean, bounded and encodable as UTF-8.
3. Answers are read up to a cap (decompressed): a larger one (a gzip bomb included) is
   refused as malformed and counted as possibly billed.
4. ``check_many`` never starts more workers than there are numbers to check.

The wire cases run the simulator (or a raw loopback HTTP server for bytes the simulator
cannot send, such as a gzip bomb) as a real HTTP server; the "answer kept" cases also
run a real enrichment into a DuckDB file and rerun it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from mobile_status_dagster.core.client import (
    AsyncMobileStatusClient,
    CheckResult,
    ClientSettings,
)
from mobile_status_dagster.core.client import async_client as async_client_module
from mobile_status_dagster.core.client import response as response_module
from mobile_status_dagster.core.client.response import read_answer
from mobile_status_dagster.core.client.results import Attempt
from mobile_status_dagster.core.engine import (
    EnrichmentJob,
    EnrichmentReport,
    enrich,
    journal_dir_for,
)
from mobile_status_dagster.core.errors import (
    InvalidTokenError,
    MalformedResponseError,
    ServerError,
    UnknownProviderError,
)
from mobile_status_dagster.core.status import SERVING_OPERATORS, Status
from mobile_status_dagster.core.store import Partition, SourceTable, file_connect
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorConfig, SimulatorServer
from mobile_status_dagster.simulator.provider import Reply
from tests.support import billed_twice, numbers_with_status, query, seed_sets

TOKEN = DEMO_TOKEN
MOBILE = "13912345678"
CAP = 64 * 1024
"""The answer size cap the client promises (``response.MAX_BODY_BYTES``)."""
INT32 = range(-(2**31), 2**31)
ORDER = "AEAC9A001403122905CC002FEE04FBD7"


def settings_for(base_url: str, **changes: Any) -> ClientSettings:
    values: dict[str, Any] = {
        "base_url": base_url,
        "token": TOKEN,
        "max_retries": 1,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.02,
        "timeout_s": 10.0,
        "max_concurrency": 4,
    }
    return ClientSettings(**(values | changes))


def check_one(
    settings: ClientSettings,
    mobile: str = MOBILE,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CheckResult:
    async def go() -> CheckResult:
        async with AsyncMobileStatusClient(settings, transport=transport) as client:
            return await client.check(mobile)

    return asyncio.run(go())


def check_all(settings: ClientSettings, mobiles: Iterable[str]) -> list[CheckResult]:
    async def go() -> list[CheckResult]:
        async with AsyncMobileStatusClient(settings) as client:
            return [r async for r in client.check_many(mobiles)]

    return asyncio.run(go())


def body(**fields: object) -> bytes:
    """A JSON answer; ``ensure_ascii`` so lone surrogates travel as ``\\udc80`` escapes."""
    return json.dumps(fields).encode()


def answer_body(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "code": 2000,
        "msg": "查询成功",
        "order_number": ORDER,
        "check": "1",
        "operator": "CM",
    }
    return body(**(fields | changes))


def parse(raw: bytes) -> response_module.Answer:
    return read_answer(200, raw, redact=TOKEN)


def assert_clean(text: str | None, limit: int) -> None:
    """Printable, no control character, ANSI escape or lone surrogate, at most ``limit``."""
    if text is None:
        return
    text.encode("utf-8")  # a lone surrogate raises here
    assert text.isprintable(), repr(text)
    assert "\x1b" not in text
    assert len(text) <= limit, len(text)


def assert_result_clean(result: CheckResult) -> None:
    """Every string and code the client returns is storable as the audit stores it."""
    items: list[CheckResult | Attempt] = [result, *result.attempts]
    for item in items:
        assert_clean(item.message, 400)
        assert_clean(item.order_number, 64)
        assert item.operator is None or item.operator in SERVING_OPERATORS
        assert item.code is None or item.code in INT32
    for attempt in result.attempts:
        # The journal's encoding of an attempt (engine/journal.py) must not raise.
        line = json.dumps(
            [attempt.message, attempt.order_number, attempt.operator, attempt.code],
            ensure_ascii=False,
        )
        line.encode()
        if attempt.error is not None:
            str(attempt.error).encode()


# -- a simulator whose 2000 answers are rewritten ---------------------------------------


@contextlib.contextmanager
def rewritten_answers(sim: SimulatorServer, rewrite: Callable[[Reply], bytes]) -> Iterator[None]:
    """While open, every 2000 answer's body is ``rewrite(reply)``; the provider still
    bills it (its ledger says so), as a real provider bills a query whatever it sends."""
    provider = sim.provider
    decide = provider.decide

    def wrapped(mobile: str | None, token: str | None) -> Reply:
        reply = decide(mobile, token)
        if reply.entry.code != 2000:
            return reply
        return dataclasses.replace(reply, body=rewrite(reply))

    provider.decide = wrapped  # type: ignore[method-assign]
    try:
        yield
    finally:
        provider.decide = decide  # type: ignore[method-assign]


def dirty_answer(reply: Reply) -> bytes:
    """The provider's answer with a dirty operator, order number and message."""
    entry = reply.entry
    return body(
        code=2000,
        msg="查询成功\x1b[2J\r\n\x00\udc80" + "x" * 500,
        order_number=f"{entry.order_number}\udc80\x1b[31m",
        check=str(entry.check),
        operator=f"{entry.operator}\udc80",
    )


# -- a real enrichment -------------------------------------------------------------------


def run_engine(sim: SimulatorServer, db: Path, run_id: str) -> EnrichmentReport:
    async def go() -> EnrichmentReport:
        settings = settings_for(sim.base_url, max_concurrency=4)
        async with AsyncMobileStatusClient(settings) as client:
            job = EnrichmentJob(
                source=SourceTable(),
                partitions=(Partition("s"),),
                run_id=run_id,
                unit_price=Decimal("0.05"),
            )
            return await enrich(
                job,
                client=client,
                connect=file_connect(str(db)),
                journal_dir=journal_dir_for(str(db)),
            )

    return asyncio.run(go())


# == 1. deeply nested JSON ===============================================================


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b"{" + b'"a":{' * 30_000,
        b'{"code":2000,"msg":' + b"[" * 50_000,
        b'{"code":2000,"check":"1","operator":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ],
    ids=["brackets", "objects", "nested-msg", "closed-nesting"],
)
def test_deeply_nested_json_is_a_malformed_answer(raw: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        parse(raw)


def test_deeply_nested_answers_over_the_wire_are_recorded_as_malformed(
    simulator: SimulatorServer,
) -> None:
    nested = b'{"code":2000,"msg":' + b"[" * 50_000
    with rewritten_answers(simulator, lambda _: nested):
        result = check_one(settings_for(simulator.base_url, max_retries=2))
    assert isinstance(result.error, MalformedResponseError)
    assert result.status is None
    assert len(result.attempts) == 3  # retried like any malformed body
    assert all(isinstance(a.error, MalformedResponseError) for a in result.attempts)
    assert not result.billed
    assert_result_clean(result)


def test_deeply_nested_answers_reach_the_audit_in_a_real_enrichment(
    simulator: SimulatorServer, db: Path
) -> None:
    numbers = numbers_with_status(1, 3)
    seed_sets(db, {"s": numbers})
    with rewritten_answers(simulator, lambda _: b"[" * 60_000):
        report = run_engine(simulator, db, "nested")
    assert not report.ok
    rows = query(db, "SELECT mobile, error, billed FROM provider_calls ORDER BY ALL")
    assert len(rows) == 2 * len(numbers)  # every attempt, 1 retry each
    assert {r[1] for r in rows} == {"MalformedResponseError"}
    assert not any(r[2] for r in rows)
    # Once the provider answers again, the numbers are checked.
    report = run_engine(simulator, db, "after")
    assert report.ok
    assert query(db, "SELECT count(*) FROM mobile_status_latest") == [(3,)]


# == 2. provider fields validated at parse time ==========================================


@pytest.mark.parametrize(
    ("check", "status"),
    [
        ("1", Status.ONLINE),
        (1, Status.ONLINE),
        (" 1", Status.ONLINE),
        ("1\n", Status.ONLINE),  # ASCII whitespace around the digit is tolerated
        ("\t5 ", Status.CANCELLED),
        ("0", Status.UNKNOWN),
        (0, Status.UNKNOWN),
    ],
)
def test_check_accepts_one_ascii_digit_0_to_5(check: object, status: Status) -> None:
    assert parse(answer_body(check=check)).status is status


@pytest.mark.parametrize(
    "check",
    [
        "١",  # Arabic-Indic one: int() accepts it
        "１",  # full-width one
        "𝟏",  # mathematical bold one
        "01",
        "+1",
        "-0",
        "1_0",
        "1 1",
        "1.0",
        "",
        " ",
        "6",
        "\x001",
        True,
        False,
        1.0,
        -1,
        6,
        None,
        [1],
        {"1": 1},
    ],
)
def test_check_rejects_anything_else_as_malformed(check: object) -> None:
    with pytest.raises(MalformedResponseError):
        parse(answer_body(check=check))


@pytest.mark.parametrize(
    "operator",
    [
        "CM\udc80",
        "\x1b[31mCM",
        "\x1b[31mCM\x1b[0m",
        "C\nM",
        "CM\x00",
        "C\x00M",
        "ＣＭ",  # full-width
        "XX",
        "CMCC",
        "O" * 60_000,
        12,
        True,
        ["CM"],
    ],
)
def test_an_unknown_operator_keeps_the_billed_answer(operator: object) -> None:
    answer = parse(answer_body(operator=operator))
    assert answer.status is Status.ONLINE  # the provider's status, billed
    assert answer.operator is None
    assert answer.order_number == ORDER
    assert answer.message is not None
    assert answer.message.startswith("查询成功")
    assert "operator" in answer.message  # the cleaned raw value is said
    assert_clean(answer.message, 400)


@pytest.mark.parametrize("operator", ["CM", "cu", " ct ", "CT\n", "CM\r\n", "Cm"])
def test_serving_operators_are_read(operator: str) -> None:
    answer = parse(answer_body(operator=operator))
    assert answer.operator == operator.strip().upper()
    assert answer.message == "查询成功"


def test_a_missing_operator_is_none_without_a_note() -> None:
    answer = parse(answer_body(check="0", operator=None))
    assert (answer.status, answer.operator, answer.message) == (Status.UNKNOWN, None, "查询成功")


@pytest.mark.parametrize(
    ("order_number", "stored"),
    [
        (ORDER, ORDER),
        (f" {ORDER}\n", ORDER),
        (123456789, "123456789"),
        (f"{ORDER}\udc80", f"{ORDER}?"),
        ("AB\x1b[31mCD", "AB?[31mCD"),
        ("AB\r\nCD", "AB??CD"),
        ("AB CD", "AB?CD"),
        ("订单1", "??1"),
        ("A" * 100, "A" * 64),
        ("A" * 60_000, "A" * 64),
        (None, None),
        ("", None),
        ("\udc80", "?"),
        (True, None),
        (1.5, None),
        (["A"], None),
    ],
)
def test_order_numbers_are_bounded_printable_ascii_and_the_answer_stays_billed(
    order_number: object, stored: str | None
) -> None:
    answer = parse(answer_body(order_number=order_number))
    assert answer.status is Status.ONLINE
    assert answer.status.billed
    assert answer.order_number == stored
    assert_clean(answer.order_number, 64)
    if stored is not None:
        assert all("!" <= c <= "~" for c in stored)
    assert answer.message is not None
    assert_clean(answer.message, 400)
    altered = (
        order_number is not None and order_number != "" and str(order_number).strip() != stored
    )
    assert ("order_number" in answer.message) is altered


@pytest.mark.parametrize(
    "msg",
    [
        "ok\x1b[31m red\x1b[0m",
        "ok\r\nINJECTED log line",
        "ok\x00\x07\x08",
        "ok\udc80\ud800",
        "ok\u202egnp.exe",  # a bidi override
        "ok\x9b31m",  # an 8-bit CSI
        "查询成功" * 1000,
        "x" * 60_000,
    ],
)
def test_messages_are_cleaned_and_cut(msg: str) -> None:
    answer = parse(answer_body(msg=msg))
    assert answer.status is Status.ONLINE
    assert answer.message is not None
    assert_clean(answer.message, 201)
    assert "[31m" not in answer.message


@pytest.mark.parametrize(
    "msg",
    [
        f"bad token {TOKEN}",
        f"bad token {TOKEN[:10]}\x1b[0m{TOKEN[10:]}",
        f"bad token {TOKEN[:10]}\udc80{TOKEN[10:]}" + "x" * 500,
        "x" * 190 + TOKEN,
    ],
)
def test_the_token_is_still_redacted_from_messages(msg: str) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        read_answer(200, body(code=4001, msg=msg), redact=TOKEN)
    message = caught.value.provider_message
    assert message is not None
    assert TOKEN not in message
    assert TOKEN[:10] not in message
    assert TOKEN[-10:] not in message
    assert_clean(message, 201)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"operator": "X" + TOKEN},
        {"operator": TOKEN},
        {"order_number": TOKEN},
        {"order_number": TOKEN + "\udc80"},
    ],
    ids=["operator-after-x", "operator", "order-number", "dirty-order-number"],
)
def test_the_token_never_comes_back_in_other_fields(fields: dict[str, object]) -> None:
    answer = parse(answer_body(**fields))
    for text in (answer.message, answer.order_number, answer.operator):
        assert text is None or (TOKEN not in text and TOKEN[:16] not in text)


def test_a_non_string_message_is_not_stringified() -> None:
    answer = parse(answer_body(msg=[[[[1]]]]))
    assert answer.message is None
    assert parse(answer_body(msg=12)).message == "12"


@pytest.mark.parametrize(
    ("code", "kept", "text"),
    [
        (99999999999999999999, None, "99999999999999999999"),
        (2**70, None, str(2**70)),
        (-(2**31) - 1, None, str(-(2**31) - 1)),
        (2**31, None, str(2**31)),
        ("99999999999999999999", None, "99999999999999999999"),
        (-1, -1, None),
        ("-1", -1, None),
        (2**31 - 1, 2**31 - 1, None),
        (4100, 4100, None),
        ("9" * 5000, None, "9" * 20),  # the raw text, cut
    ],
)
def test_undocumented_codes_fit_the_audit_column(
    code: object, kept: int | None, text: str | None
) -> None:
    with pytest.raises(UnknownProviderError) as caught:
        read_answer(200, body(code=code, msg="未知错误"), redact=TOKEN)
    error = caught.value
    assert error.provider_code == kept
    message = error.provider_message
    assert message is not None
    assert "未知错误" in message
    if text is not None:
        assert text in message
    assert_clean(message, 400)


@pytest.mark.parametrize(
    "code", ["２０００", "2_000", " 2000\x00", "2000.0", 2000.0, True, "1e3", "+2000", "", [2000]]
)
def test_codes_that_are_not_ascii_integers_are_malformed(code: object) -> None:
    with pytest.raises(MalformedResponseError):
        read_answer(200, body(code=code, check="1"), redact=TOKEN)


def test_a_huge_integer_code_is_malformed_not_a_crash() -> None:
    # json refuses integers over 4300 digits (int_max_str_digits): a malformed body.
    with pytest.raises(MalformedResponseError):
        read_answer(200, b'{"code":' + b"9" * 5000 + b"}", redact=TOKEN)


def test_dirty_fields_over_the_wire_keep_the_billed_answer_clean(
    simulator: SimulatorServer,
) -> None:
    mobiles = numbers_with_status(2, 3)
    with rewritten_answers(simulator, dirty_answer):
        results = check_all(settings_for(simulator.base_url), mobiles)
    ledger = {e.mobile: e for e in simulator.provider.ledger()}
    assert len(results) == 3 == len(ledger)
    for result in results:
        entry = ledger[result.mobile]
        assert result.error is None
        assert result.status is Status.POWERED_OFF
        assert result.billed
        assert len(result.attempts) == 1
        assert result.operator is None
        assert result.order_number == f"{entry.order_number}??[31m"
        assert result.message is not None
        assert result.message.startswith("查询成功")
        assert_result_clean(result)


def test_dirty_billed_answers_are_kept_through_a_real_enrichment_and_never_paid_again(
    simulator: SimulatorServer, db: Path
) -> None:
    numbers = numbers_with_status(1, 4) + numbers_with_status(4, 2)
    seed_sets(db, {"s": numbers})
    with rewritten_answers(simulator, dirty_answer):
        report = run_engine(simulator, db, "dirty")
    assert report.ok, report.stop_message()
    assert report.billed == len(numbers)
    ledger = {e.mobile: e for e in simulator.provider.ledger(billed_only=True)}
    assert sorted(str(m) for m in ledger) == sorted(numbers)
    audit = query(
        db,
        "SELECT mobile, order_number, status_code, operator, provider_message "
        "FROM provider_calls WHERE billed",
    )
    assert sorted(r[0] for r in audit) == sorted(numbers)
    for mobile, order_number, status_code, operator, message in audit:
        assert order_number == f"{ledger[mobile].order_number}??[31m"
        assert status_code == ledger[mobile].check
        assert operator is None
        assert_clean(message, 400)
    latest = query(db, "SELECT mobile, status_code, order_number FROM mobile_status_latest")
    assert sorted(latest) == sorted(
        (m, ledger[m].check, f"{ledger[m].order_number}??[31m") for m in numbers
    )
    assert not list(journal_dir_for(str(db)).glob("*.jsonl"))
    # The rerun pays nothing: every answer was kept.
    calls = len(simulator.provider.ledger())
    rerun = run_engine(simulator, db, "rerun")
    assert rerun.ok
    assert rerun.sent == 0
    assert len(simulator.provider.ledger()) == calls
    assert billed_twice(simulator) == []


@pytest.mark.parametrize(
    ("code", "stored"), [(2**70, None), (-1, -1), (99999999999999999999, None)]
)
def test_out_of_range_codes_are_recorded_in_a_real_enrichment(
    simulator: SimulatorServer, db: Path, code: int, stored: int | None
) -> None:
    numbers = numbers_with_status(1, 2)
    seed_sets(db, {"s": numbers})
    with rewritten_answers(simulator, lambda _: body(code=code, msg="未知错误")):
        report = run_engine(simulator, db, "odd")
    assert not report.ok
    rows = query(db, "SELECT provider_code, provider_message, error, billed FROM provider_calls")
    assert len(rows) == 2  # undocumented codes are not retried
    for provider_code, message, error, billed in rows:
        assert provider_code == stored
        if stored is None:
            assert str(code) in message
        assert error == "UnknownProviderError"
        assert not billed


# == 3. a cap on the answer size =========================================================


def test_the_cap_is_64_kib() -> None:
    assert response_module.MAX_BODY_BYTES == CAP


def assert_oversized(result: CheckResult, attempts: int) -> None:
    assert isinstance(result.error, MalformedResponseError)
    assert result.error.possibly_billed
    assert result.status is None
    assert result.order_number is None
    assert len(result.attempts) == attempts
    for attempt in result.attempts:
        assert isinstance(attempt.error, MalformedResponseError)
        assert attempt.possibly_billed
        assert not attempt.billed
    assert result.possibly_billed
    assert not result.billed
    assert_result_clean(result)


def test_an_answer_over_the_cap_is_refused_as_possibly_billed(simulator: SimulatorServer) -> None:
    huge = answer_body(order_number="A" * (1 << 20))
    with rewritten_answers(simulator, lambda _: huge):
        result = check_one(settings_for(simulator.base_url, max_retries=2))
    assert_oversized(result, 3)
    assert "65536" in str(result.error)


def test_an_answer_at_the_cap_is_read(simulator: SimulatorServer) -> None:
    base = answer_body(msg="")
    fitting = answer_body(msg="x" * (CAP - len(base)))
    assert len(fitting) == CAP
    with rewritten_answers(simulator, lambda _: fitting):
        result = check_one(settings_for(simulator.base_url))
    assert result.error is None
    assert result.status is Status.ONLINE
    assert result.message == "x" * 200 + "…"


def test_oversized_answers_reach_the_audit_as_possibly_billed(
    simulator: SimulatorServer, db: Path
) -> None:
    numbers = numbers_with_status(1, 3)
    seed_sets(db, {"s": numbers})
    with rewritten_answers(simulator, lambda _: answer_body(order_number="A" * 300_000)):
        report = run_engine(simulator, db, "huge")
    assert not report.ok
    assert report.possibly_billed == 2 * len(numbers)
    rows = query(db, "SELECT error, billed, possibly_billed, order_number FROM provider_calls")
    assert len(rows) == 2 * len(numbers)
    assert {r[0] for r in rows} == {"OversizedResponseError"}
    assert all(not r[1] and r[2] and r[3] is None for r in rows)
    assert query(db, "SELECT count(*) FROM mobile_status_latest") == [(0,)]


# -- a raw loopback HTTP server, for bytes the simulator never sends ---------------------


class RawServer:
    """A loopback HTTP/1.1 server answering every request with ``response``, then closing."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            for start in range(0, len(self.response), 16384):
                writer.write(self.response[start : start + 16384])
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def http_response(payload: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json; charset=utf-8"]
    head += [*headers, f"Content-Length: {len(payload)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def compressed(parts: Iterable[bytes], wbits: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [compressor.compress(part) for part in parts]
    return b"".join([*out, compressor.flush()])


@functools.cache
def bomb(wbits: int, megabytes: int = 48) -> bytes:
    """A valid answer whose order number is ``megabytes`` MB of ``A``, compressed below the cap."""
    block = b"A" * (1 << 20)
    head = b'{"code":2000,"msg":"ok","check":"1","operator":"CM","order_number":"'
    data = compressed([head, *([block] * megabytes), b'"}'], wbits)
    assert len(data) < CAP
    return data


GZIP = 16 + zlib.MAX_WBITS
ZLIB = zlib.MAX_WBITS
RAW_DEFLATE = -zlib.MAX_WBITS


async def check_against(response: bytes, **changes: Any) -> tuple[CheckResult, RawServer, int]:
    """Check one number against a raw server; the result, the server and the peak of
    Python memory allocated meanwhile (tracemalloc)."""
    async with RawServer(response) as server:
        settings = settings_for(server.base_url, **changes)
        async with AsyncMobileStatusClient(settings) as client:
            tracemalloc.start()
            try:
                result = await client.check(MOBILE)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    return result, server, peak


@pytest.mark.parametrize(
    ("encoding", "wbits"),
    [("gzip", GZIP), ("x-gzip", GZIP), ("deflate", ZLIB), ("deflate", RAW_DEFLATE)],
)
def test_a_compression_bomb_is_refused_without_being_inflated_in_memory(
    encoding: str, wbits: int
) -> None:
    response = http_response(bomb(wbits), f"Content-Encoding: {encoding}")
    result, server, peak = asyncio.run(check_against(response, max_retries=1))
    assert_oversized(result, 2)
    assert len(server.requests) == 2
    # 48 MB decompressed in memory without the cap; a few hundred kB with it.
    assert peak < 8 * 1024 * 1024, peak


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [
        ("gzip", compressed([answer_body()], GZIP)),
        ("GZIP", compressed([answer_body()], GZIP)),
        ("deflate", compressed([answer_body()], ZLIB)),
        ("deflate", compressed([answer_body()], RAW_DEFLATE)),
        ("identity", answer_body()),
        ("gzip, gzip", compressed([compressed([answer_body()], GZIP)], GZIP)),
    ],
)
def test_compressed_answers_under_the_cap_are_read(encoding: str, payload: bytes) -> None:
    response = http_response(payload, f"Content-Encoding: {encoding}")
    result, server, _ = asyncio.run(check_against(response))
    assert result.error is None
    assert (result.status, result.operator, result.order_number) == (Status.ONLINE, "CM", ORDER)
    # Only encodings the client can decode within the cap are asked for.
    (request,) = server.requests
    assert b"accept-encoding: gzip, deflate\r\n" in request.lower()


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [
        ("br", b"\x1b\x00\x00"),
        ("zstd", b"(\xb5/\xfd"),
        ("compress", b"\x1f\x9d"),
        ("gzip", b"\x1f\x8b not gzip at all"),
        ("deflate", b"not deflate"),
    ],
)
def test_undecodable_answers_are_malformed(encoding: str, payload: bytes) -> None:
    response = http_response(payload, f"Content-Encoding: {encoding}")
    result, _, _ = asyncio.run(check_against(response, max_retries=0))
    assert isinstance(result.error, MalformedResponseError)
    assert not result.error.possibly_billed
    assert_result_clean(result)


def test_an_uncompressed_answer_over_the_cap_is_refused() -> None:
    response = http_response(answer_body(order_number="A" * (CAP + 1)))
    result, _, peak = asyncio.run(check_against(response, max_retries=0))
    assert_oversized(result, 1)
    assert peak < 4 * 1024 * 1024, peak


def test_a_chunked_answer_over_the_cap_is_refused() -> None:
    chunk = b"A" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(1024))
    head = b'{"code":2000,"check":"1","order_number":"'
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n" + b"%x\r\n%s\r\n" % (len(head), head) + chunks
    )
    result, _, peak = asyncio.run(check_against(response, max_retries=0))
    assert_oversized(result, 1)
    assert peak < 4 * 1024 * 1024, peak


def test_a_huge_error_page_is_still_a_server_error() -> None:
    response = http_response(b"<html>" + b"x" * (2 * CAP) + b"</html>", status="502 Bad Gateway")
    result, _, _ = asyncio.run(check_against(response, max_retries=0))
    assert isinstance(result.error, ServerError)
    assert not result.possibly_billed


# -- unit edge cases (httpx.MockTransport) -----------------------------------------------


class ChunkStream(httpx.AsyncByteStream):
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = list(chunks)
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            self.sent += 1
            yield chunk


def test_a_streamed_answer_stops_being_read_at_the_cap() -> None:
    stream = ChunkStream([answer_body()[:-2]] + [b"A" * 1024] * 10_000)
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=stream))
    result = check_one(settings_for("http://127.0.0.1:9", max_retries=0), transport=transport)
    assert_oversized(result, 1)
    assert stream.sent < 70


def test_a_pre_read_mock_answer_over_the_cap_is_refused() -> None:
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, content=answer_body(msg="x" * CAP))
    )
    result = check_one(settings_for("http://127.0.0.1:9", max_retries=0), transport=transport)
    assert_oversized(result, 1)


def test_read_answer_refuses_a_body_over_the_cap() -> None:
    with pytest.raises(MalformedResponseError) as caught:
        parse(answer_body(msg="x" * CAP))
    assert caught.value.possibly_billed


# == 4. never more workers than numbers ==================================================


WorkerTasks = list[str]


@pytest.fixture
def started_tasks(monkeypatch: pytest.MonkeyPatch) -> WorkerTasks:
    """Names of the tasks ``asyncio.create_task`` starts during the test.

    A guard: past 500 tasks it refuses, so a regression fails fast instead of starting
    a hundred million of them.
    """
    names: WorkerTasks = []
    create_task = asyncio.create_task

    def counting(coro: Coroutine[Any, Any, Any], **kwargs: Any) -> asyncio.Task[Any]:
        if len(names) >= 500:
            coro.close()
            raise RuntimeError("more than 500 tasks started")
        names.append(getattr(coro, "__qualname__", ""))
        return create_task(coro, **kwargs)

    monkeypatch.setattr(asyncio, "create_task", counting)
    return names


def huge(settings: ClientSettings, max_concurrency: int) -> ClientSettings:
    """``settings`` with ``max_concurrency`` forced past the settings' own bound.

    The settings refuse more than a bound (1024 today); the client must not rely on it:
    a huge value, set by older settings or a caller, still starts one worker per number.
    """
    object.__setattr__(settings, "max_concurrency", max_concurrency)
    return settings


def check_many_tasks(names: WorkerTasks) -> list[str]:
    """The tasks ``check_many`` started (its feeder and its workers)."""
    return [n for n in names if "check_many" in n]


def _qualname(coro: object) -> str:
    return str(getattr(coro, "__qualname__", ""))


class CountingTransport(httpx.AsyncBaseTransport):
    """The default transport, counting requests in flight and check_many's live tasks."""

    def __init__(self, max_concurrency: int) -> None:
        self._inner = async_client_module._aiohttp_transport(max_concurrency)
        self.in_flight = self.max_in_flight = self.max_tasks = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        live = [t for t in asyncio.all_tasks() if "check_many" in _qualname(t.get_coro())]
        self.max_tasks = max(self.max_tasks, len(live))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._inner.handle_async_request(request)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self._inner.aclose()


async def run_many(
    settings: ClientSettings,
    mobiles: Iterable[str] | AsyncIterator[str],
    transport: CountingTransport,
) -> list[CheckResult]:
    async with AsyncMobileStatusClient(settings, transport=transport) as client:
        return [r async for r in client.check_many(mobiles)]


@pytest.mark.parametrize("concurrency", [1024, 100_000_000])
def test_a_huge_concurrency_with_three_numbers_starts_at_most_three_workers(
    simulator: SimulatorServer, started_tasks: WorkerTasks, concurrency: int
) -> None:
    mobiles = numbers_with_status(1, 3)
    settings = huge(settings_for(simulator.base_url), concurrency)
    transport = CountingTransport(concurrency)
    results = asyncio.run(run_many(settings, mobiles, transport))
    assert sorted(r.mobile for r in results) == sorted(mobiles)
    assert all(r.status is Status.ONLINE for r in results)
    assert len(check_many_tasks(started_tasks)) <= 1 + 3  # the feeder and 3 workers
    assert transport.max_tasks <= 1 + 3


def test_no_number_starts_no_worker(simulator: SimulatorServer, started_tasks: WorkerTasks) -> None:
    settings = huge(settings_for(simulator.base_url), 1024)
    results = asyncio.run(run_many(settings, [], CountingTransport(8)))
    assert results == []
    assert len(check_many_tasks(started_tasks)) <= 1


def test_numbers_from_an_async_iterable_start_at_most_one_worker_each(
    simulator: SimulatorServer, started_tasks: WorkerTasks
) -> None:
    mobiles = numbers_with_status(1, 5)

    async def source() -> AsyncIterator[str]:
        for mobile in mobiles:
            yield mobile

    settings = huge(settings_for(simulator.base_url), 1024)
    results = asyncio.run(run_many(settings, source(), CountingTransport(8)))
    assert sorted(r.mobile for r in results) == sorted(mobiles)
    assert len(check_many_tasks(started_tasks)) <= 1 + 5


def test_a_fatal_error_with_a_huge_concurrency_still_stops_the_run(
    simulator: SimulatorServer, started_tasks: WorkerTasks
) -> None:
    settings = huge(settings_for(simulator.base_url, token="W" * 32), 1024)
    with pytest.raises(InvalidTokenError):
        asyncio.run(run_many(settings, numbers_with_status(1, 3), CountingTransport(8)))
    assert len(check_many_tasks(started_tasks)) <= 1 + 3


def test_a_long_input_still_keeps_max_concurrency_requests_in_flight(
    started_tasks: WorkerTasks,
) -> None:
    with SimulatorServer(SimulatorConfig(latency_ms=20)) as sim:
        mobiles = numbers_with_status(1, 120)
        settings = settings_for(sim.base_url, max_concurrency=8)
        transport = CountingTransport(8)
        results = asyncio.run(run_many(settings, mobiles, transport))
    assert len(results) == 120
    assert all(r.status is Status.ONLINE for r in results)
    assert transport.max_in_flight == 8
    assert len(check_many_tasks(started_tasks)) <= 1 + 8
