"""The simulator's configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any, Literal

DEMO_TOKEN = "DEMOTOKEN0SIMULATOR0000000000000"  # noqa: S105 (public demo value)
"""The fixed 32-character token the simulator accepts unless told otherwise (not a secret)."""

FieldStyle = Literal["lower", "title", "upper"]
FIELD_STYLES: tuple[FieldStyle, ...] = ("lower", "title", "upper")

FAULT_RATE_FIELDS: tuple[str, ...] = (
    "http_500_rate",
    "malformed_rate",
    "internal_error_rate",
    "operator_refused_rate",
    "operator_timeout_rate",
    "odd_code_rate",
)
"""Faults that replace the answer; one draw picks at most one, so their rates must sum to <= 1."""

RATE_FIELDS: tuple[str, ...] = (*FAULT_RATE_FIELDS, "slow_rate")

DELAY_FIELDS: tuple[str, ...] = ("latency_ms", "jitter_ms", "slow_ms")
"""Delays in milliseconds, each bounded to ``0..MAX_DELAY_MS``."""

MAX_DELAY_MS = 60_000
"""The longest delay (ms) a config may ask for: one minute. A larger value could only park
connections (or a whole test run) for hours, which no test or benchmark needs."""

TOKEN_ENV = "MOBILE_STATUS_SIMULATOR_TOKEN"  # noqa: S105 - the variable's name, not a token
"""The environment variable ``mobile-status simulator`` reads its account token from when
``--token`` is not given (a command line is visible to every local user in ``ps``)."""

_HTTP_SETTABLE_EXCLUDED = frozenset({"ledger_path", "token"})


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated provider behaves. Every field has a default that gives a
    well-behaved provider: demo token, 50 ms latency, no faults, no limits.

    Change it at runtime with :meth:`SimulatedProvider.update_config` or
    ``POST /_sim/config``; a new frozen value replaces the old one atomically.

    Example::

        config = SimulatorConfig(latency_ms=0, balance=100, operator_timeout_rate=0.1)
    """

    token: str = DEMO_TOKEN
    """The account token clients must send (header ``token`` or query ``?token=``)."""
    latency_ms: float = 50
    """Base delay before every ``/mobile/check`` response (0 to ``MAX_DELAY_MS``)."""
    jitter_ms: float = 0
    """Latency varies uniformly by up to this much either way (never below zero;
    at most ``MAX_DELAY_MS``)."""
    seed: int = 0
    """Seeds each number's truth and the fault draws."""
    error_http_status: int = 200
    """HTTP status of JSON error responses: 200 or 202 (the vendor's older APIs use 202)."""
    field_style: FieldStyle = "lower"
    """Spelling of JSON field names: ``code`` (lower), ``Code`` (title) or ``CODE`` (upper)."""
    check_as_int: bool = False
    """Send ``check`` as a number (``1``) instead of the documented string (``"1"``)."""
    qps_limit: int | None = None
    """Admitted requests allowed in any 1 s window; above it the answer is 4029."""
    balance: int | None = None
    """Billed answers the account can still pay for; ``None`` is unlimited."""
    disabled: bool = False
    """Account not verified / service not enabled: every request gets 4004."""
    requery_min_interval_s: float | None = None
    """When set, a number answered less than this long ago gets 4030."""
    http_500_rate: float = 0.0
    """Share of requests answered with a bare HTTP 500 (not billed)."""
    slow_rate: float = 0.0
    """Share of answers delayed by ``slow_ms`` after being decided and billed."""
    slow_ms: float = 3000
    """Extra delay of a slow answer (0 to ``MAX_DELAY_MS``)."""
    malformed_rate: float = 0.0
    """Share of requests answered HTTP 200 with a body that is not the JSON contract."""
    internal_error_rate: float = 0.0
    """Share of requests answered with code 5000."""
    operator_refused_rate: float = 0.0
    """Share of requests answered with code 5001."""
    operator_timeout_rate: float = 0.0
    """Share of requests answered with code 5002."""
    odd_code_rate: float = 0.0
    """Share of requests answered with an undocumented code (4100)."""
    ledger_path: str | os.PathLike[str] | None = None
    """Append every request to this file as a JSON line (flushed per line)."""
    ledger_max_entries: int | None = None
    """Keep only the most recent N ledger entries in memory (the file keeps all)."""

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ValueError("invalid simulator config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> SimulatorConfig:
        """A copy with ``changes`` applied; ValueError on unknown fields or bad values."""
        unknown = sorted(set(changes) - _FIELD_NAMES)
        if unknown:
            raise ValueError(f"unknown simulator config field(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values, without the token."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "token":
                continue
            value = getattr(self, f.name)
            out[f.name] = os.fspath(value) if isinstance(value, os.PathLike) else value
        return out


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(SimulatorConfig))


def changes_from_json(payload: object) -> dict[str, Any]:
    """Validate a ``POST /_sim/config`` body into keyword changes for ``replace``.

    Two fields cannot be changed over HTTP, even with the admin token: ``ledger_path``
    (HTTP must not pick a file to write) and ``token`` (the account token is set where
    the simulator starts: ``SimulatorConfig``, ``--token`` or ``MOBILE_STATUS_SIMULATOR_TOKEN``).
    Values are validated by :class:`SimulatorConfig` (delays at most ``MAX_DELAY_MS``).
    """
    if not isinstance(payload, Mapping):
        raise ValueError("expected a JSON object of config fields")
    changes = {str(k): v for k, v in payload.items()}
    refused = sorted(set(changes) & _HTTP_SETTABLE_EXCLUDED)
    if refused:
        raise ValueError(f"cannot be changed over HTTP: {', '.join(refused)}")
    return changes


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problems(c: SimulatorConfig) -> list[str]:
    problems: list[str] = []
    if not isinstance(c.token, str) or not c.token:
        problems.append("token must be a non-empty string")
    for name in DELAY_FIELDS:
        value = getattr(c, name)
        if not _is_number(value) or not 0 <= value <= MAX_DELAY_MS:
            problems.append(f"{name} must be a number of milliseconds in [0, {MAX_DELAY_MS}]")
    if not _is_int(c.seed):
        problems.append("seed must be an integer")
    if c.error_http_status not in (200, 202) or isinstance(c.error_http_status, bool):
        problems.append("error_http_status must be 200 or 202")
    if c.field_style not in FIELD_STYLES:
        problems.append(f"field_style must be one of {', '.join(FIELD_STYLES)}")
    for name in ("check_as_int", "disabled"):
        if not isinstance(getattr(c, name), bool):
            problems.append(f"{name} must be true or false")
    if c.qps_limit is not None and (not _is_int(c.qps_limit) or c.qps_limit < 1):
        problems.append("qps_limit must be null or an integer >= 1")
    if c.balance is not None and (not _is_int(c.balance) or c.balance < 0):
        problems.append("balance must be null or an integer >= 0")
    interval = c.requery_min_interval_s
    if interval is not None and (not _is_number(interval) or interval < 0):
        problems.append("requery_min_interval_s must be null or a number >= 0")
    limit = c.ledger_max_entries
    if limit is not None and (not _is_int(limit) or limit < 1):
        problems.append("ledger_max_entries must be null or an integer >= 1")
    if c.ledger_path is not None and not isinstance(c.ledger_path, str | os.PathLike):
        problems.append("ledger_path must be null or a path")
    rates_ok = True
    for name in RATE_FIELDS:
        value = getattr(c, name)
        if not _is_number(value) or not 0 <= value <= 1:
            problems.append(f"{name} must be a number in [0, 1]")
            rates_ok = False
    if rates_ok:
        total = sum(getattr(c, name) for name in FAULT_RATE_FIELDS)
        if total > 1 + 1e-9:
            problems.append(f"{', '.join(FAULT_RATE_FIELDS)} must sum to <= 1 (got {total:g})")
    return problems
