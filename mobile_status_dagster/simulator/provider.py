"""The simulated provider's state and decisions, independent of HTTP plumbing.

:meth:`SimulatedProvider.decide` turns one request (``mobile``, ``token``) into a
:class:`Reply`: the HTTP status, the body bytes, how long to wait before
sending it, and the ledger entry already recorded for it. Billing happens in
``decide``, before any delay, as a real provider bills a query whose answer a
timed-out client never reads.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import json
import os
import random
import re
import threading
import time
from typing import Any

from mobile_status_dagster.simulator.config import (
    FAULT_RATE_FIELDS,
    SimulatorConfig,
)
from mobile_status_dagster.simulator.ledger import Ledger, LedgerEntry
from mobile_status_dagster.simulator.truth import number_truth

MOBILE_PATTERN = re.compile(r"1[3-9][0-9]{9}")

ODD_CODE = 4100
"""The undocumented code the ``odd_code`` fault answers with."""

MESSAGES: dict[int, str] = {
    2000: "查询成功",
    4001: "token无效或缺失",
    4002: "账户余额不足",
    4003: "手机号码格式错误",
    4004: "账户未认证或服务未开通",
    4029: "请求过于频繁，超出QPS限制",
    4030: "同一号码查询过于频繁，请稍后再试",
    5000: "服务内部错误",
    5001: "运营商拒绝查询",
    5002: "运营商查询超时",
    ODD_CODE: "未知错误",
}

_FAULT_CODES: dict[str, int] = {
    "internal_error": 5000,
    "operator_refused": 5001,
    "operator_timeout": 5002,
    "odd_code": ODD_CODE,
}

_CANONICAL_KEYS = ("code", "msg", "order_number", "check", "operator")

_JSON = "application/json"
_HTML = "text/html"

_HTTP_500_BODY = (
    b"<html><head><title>500 Internal Server Error</title></head>"
    b"<body><h1>500 Internal Server Error</h1></body></html>\n"
)
_GATEWAY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """What to send for one request, and after how long."""

    http_status: int
    body: bytes
    content_type: str
    delay_s: float
    entry: LedgerEntry


@dataclasses.dataclass(frozen=True)
class SimulatorStats:
    """Counters since start or the last reset."""

    requests: int
    """Every request to ``/mobile/check``."""
    admitted: int
    """Requests past the token, account and QPS checks."""
    billed: int
    by_code: dict[str, int]
    """JSON ``code`` -> count (HTTP 500 and malformed bodies carry no code)."""
    by_check: dict[str, int]
    """Answered ``check`` -> count."""
    by_fault: dict[str, int]
    max_qps: int
    """Most admitted requests observed in any 1 s window."""
    balance_remaining: int | None

    def to_dict(self) -> dict[str, Any]:
        """The stats as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class _Derived:
    """Per-config values precomputed once instead of on every request."""

    token: bytes
    keys: dict[str, str]
    error_bodies: dict[int, bytes]
    faults: tuple[tuple[float, str], ...]

    @classmethod
    def of(cls, config: SimulatorConfig) -> _Derived:
        keys = {k: _styled(k, config.field_style) for k in _CANONICAL_KEYS}
        error_bodies = {
            code: _dumps({keys["code"]: code, keys["msg"]: msg})
            for code, msg in MESSAGES.items()
            if code != 2000
        }
        bounds: list[tuple[float, str]] = []
        total = 0.0
        for name in FAULT_RATE_FIELDS:
            rate = float(getattr(config, name))
            if rate > 0:
                total += rate
                bounds.append((total, name.removesuffix("_rate")))
        return cls(config.token.encode(), keys, error_bodies, tuple(bounds))


def _styled(key: str, style: str) -> str:
    if style == "title":
        return key[:1].upper() + key[1:]
    if style == "upper":
        return key.upper()
    return key


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


class SimulatedProvider:
    """The provider's behaviour: token, account, QPS and balance checks, injected
    faults, deterministic answers, billing and the ledger.

    Thread-safe: requests are decided under a lock, so tests may change the
    config or read the ledger from another thread while a server is running.

    Example::

        provider = SimulatedProvider(SimulatorConfig(latency_ms=0, balance=2))
        reply = provider.decide("13912345678", DEMO_TOKEN)
        assert reply.entry.code == 2000
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config if config is not None else SimulatorConfig()
        self._derived = _Derived.of(self._config)
        self._ledger = Ledger(self._config.ledger_path, self._config.ledger_max_entries)
        self._rng = random.Random(self._config.seed)
        self._jitter_rng = random.Random(f"jitter:{self._config.seed}")
        self._seq = 0
        self._balance = self._config.balance
        self._window: collections.deque[float] = collections.deque()
        self._last_answer: dict[str, float] = {}
        self._requests = self._admitted = self._billed = self._max_qps = 0
        self._by_code: collections.Counter[int] = collections.Counter()
        self._by_check: collections.Counter[int] = collections.Counter()
        self._by_fault: collections.Counter[str] = collections.Counter()

    # -- configuration -----------------------------------------------------

    @property
    def config(self) -> SimulatorConfig:
        """The config in force (a frozen value; change it with :meth:`update_config`)."""
        return self._config

    def update_config(self, **changes: Any) -> SimulatorConfig:
        """Apply ``changes`` atomically and return the new config.

        Setting ``balance`` refills the remaining balance to that value (even if
        unchanged); setting ``seed`` reseeds the fault draws. ValueError on
        unknown fields or invalid values, leaving the config as it was.
        """
        with self._lock:
            new = self._config.replace(**changes)
            self._config = new
            self._derived = _Derived.of(new)
            self._ledger.reconfigure(new.ledger_path, new.ledger_max_entries)
            if "balance" in changes:
                self._balance = new.balance
            if "seed" in changes:
                self._rng = random.Random(new.seed)
                self._jitter_rng = random.Random(f"jitter:{new.seed}")
            if new.requery_min_interval_s is None:
                self._last_answer.clear()
            return new

    @property
    def balance_remaining(self) -> int | None:
        """Billed answers still affordable; ``None`` when unlimited."""
        return self._balance

    # -- answers -----------------------------------------------------------

    def truth(self, mobile: str) -> tuple[int, str]:
        """``(check, operator)`` this provider answers for ``mobile`` under its seed."""
        return number_truth(mobile, self._config.seed)

    def decide(self, mobile: str | None, token: str | None) -> Reply:
        """Decide, bill and record one ``/mobile/check`` request (no waiting)."""
        with self._lock:
            return self._decide(mobile, token)

    async def handle(self, mobile: str | None, token: str | None) -> Reply:
        """:meth:`decide`, then wait out the reply's delay."""
        reply = self.decide(mobile, token)
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        return reply

    def _decide(self, mobile: str | None, token: str | None) -> Reply:
        cfg = self._config
        derived = self._derived
        self._seq += 1
        self._requests += 1
        delay = cfg.latency_ms
        if cfg.jitter_ms:
            delay = max(0.0, delay + self._jitter_rng.uniform(-cfg.jitter_ms, cfg.jitter_ms))
        delay /= 1000.0

        token_ok = token is not None and hmac.compare_digest(token.encode(), derived.token)
        if not token_ok:
            return self._error(4001, mobile, False, delay)
        if cfg.disabled:
            return self._error(4004, mobile, True, delay)

        now = time.monotonic()
        window = self._window
        cutoff = now - 1.0
        while window and window[0] <= cutoff:
            window.popleft()
        if cfg.qps_limit is not None and len(window) >= cfg.qps_limit:
            return self._error(4029, mobile, True, delay)
        window.append(now)
        self._admitted += 1
        if len(window) > self._max_qps:
            self._max_qps = len(window)

        if mobile is None or MOBILE_PATTERN.fullmatch(mobile) is None:
            return self._error(4003, mobile, True, delay)
        if self._balance is not None and self._balance <= 0:
            return self._error(4002, mobile, True, delay)

        # Two draws per request reaching this point, whatever the rates, so one
        # seed gives one sequence of faults.
        draw = self._rng.random()
        slow = self._rng.random() < cfg.slow_rate
        for bound, fault in derived.faults:
            if draw < bound:
                return self._fault(fault, mobile, delay)

        interval = cfg.requery_min_interval_s
        if interval is not None:
            last = self._last_answer.get(mobile)
            if last is not None and now - last < interval:
                return self._error(4030, mobile, True, delay)
            self._last_answer[mobile] = now

        check, operator = number_truth(mobile, cfg.seed)
        billed = check != 0
        if billed and self._balance is not None:
            self._balance -= 1
        order_number = os.urandom(16).hex().upper()
        keys = derived.keys
        body = _dumps(
            {
                keys["code"]: 2000,
                keys["msg"]: MESSAGES[2000],
                keys["order_number"]: order_number,
                keys["check"]: check if cfg.check_as_int else str(check),
                keys["operator"]: operator,
            }
        )
        fault_name = None
        if slow:
            fault_name = "slow"
            delay += cfg.slow_ms / 1000.0
        entry = self._record(
            mobile, True, 200, 2000, check, operator, order_number, billed, fault_name
        )
        self._by_check[check] += 1
        if billed:
            self._billed += 1
        return Reply(200, body, _JSON, delay, entry)

    def _error(self, code: int, mobile: str | None, token_ok: bool, delay: float) -> Reply:
        status = self._config.error_http_status
        entry = self._record(mobile, token_ok, status, code, None, None, None, False, None)
        return Reply(status, self._derived.error_bodies[code], _JSON, delay, entry)

    def _fault(self, fault: str, mobile: str, delay: float) -> Reply:
        self._by_fault[fault] += 1
        code = _FAULT_CODES.get(fault)
        if code is not None:
            status = self._config.error_http_status
            body = self._derived.error_bodies[code]
            entry = self._record(mobile, True, status, code, None, None, None, False, fault)
            return Reply(status, body, _JSON, delay, entry)
        if fault == "http_500":
            entry = self._record(mobile, True, 500, None, None, None, None, False, fault)
            return Reply(500, _HTTP_500_BODY, _HTML, delay, entry)
        entry = self._record(mobile, True, 200, None, None, None, None, False, fault)
        return Reply(200, *self._malformed_body(), delay, entry)

    def _malformed_body(self) -> tuple[bytes, str]:
        variant = self._rng.randrange(3)
        if variant == 0:
            return _GATEWAY_PAGE, _HTML
        if variant == 1:
            keys = self._derived.keys
            whole = _dumps({keys["code"]: 2000, keys["msg"]: MESSAGES[2000], keys["check"]: "1"})
            return whole[: len(whole) // 2], _JSON
        return b"", _JSON

    def _record(
        self,
        mobile: str | None,
        token_ok: bool,
        http_status: int,
        code: int | None,
        check: int | None,
        operator: str | None,
        order_number: str | None,
        billed: bool,
        fault: str | None,
    ) -> LedgerEntry:
        if code is not None:
            self._by_code[code] += 1
        entry = LedgerEntry(
            self._seq,
            time.time(),
            mobile,
            token_ok,
            http_status,
            code,
            check,
            operator,
            order_number,
            billed,
            fault,
        )
        self._ledger.append(entry)
        return entry

    # -- ledger, stats, lifecycle --------------------------------------------

    def ledger(self, *, billed_only: bool = False) -> list[LedgerEntry]:
        """A snapshot of the ledger entries kept in memory, oldest first."""
        with self._lock:
            return self._ledger.entries(billed_only=billed_only)

    def stats(self) -> SimulatorStats:
        """A snapshot of the counters."""
        with self._lock:
            return SimulatorStats(
                requests=self._requests,
                admitted=self._admitted,
                billed=self._billed,
                by_code={str(k): v for k, v in sorted(self._by_code.items())},
                by_check={str(k): v for k, v in sorted(self._by_check.items())},
                by_fault=dict(sorted(self._by_fault.items())),
                max_qps=self._max_qps,
                balance_remaining=self._balance,
            )

    def reset(self) -> None:
        """Clear the in-memory ledger, the counters, the QPS window and the
        re-query memory; refill the balance from the config and reseed the fault
        draws. Sequence numbers keep counting and the ledger file is kept, so
        the file never holds two entries with one ``seq``."""
        with self._lock:
            self._ledger.clear()
            self._clear_counters()
            self._window.clear()
            self._last_answer.clear()
            self._balance = self._config.balance
            self._rng = random.Random(self._config.seed)
            self._jitter_rng = random.Random(f"jitter:{self._config.seed}")

    def close(self) -> None:
        """Close the ledger file (it reopens on the next request)."""
        with self._lock:
            self._ledger.close()

    def _clear_counters(self) -> None:
        self._requests = self._admitted = self._billed = self._max_qps = 0
        self._by_code.clear()
        self._by_check.clear()
        self._by_fault.clear()
