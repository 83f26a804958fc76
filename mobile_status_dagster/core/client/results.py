"""Typed results: one :class:`Attempt` per HTTP attempt, one :class:`CheckResult` per number."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mobile_status_dagster.core.errors import MobileStatusError
from mobile_status_dagster.core.status import Status


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt for one number, as the audit records it.

    ``code`` is the provider's code (``None`` when no provider JSON came back, or when
    the code does not fit a signed 32-bit integer: its text is then in ``message``);
    ``billed`` is true for a definitive answer; ``possibly_billed`` marks a request
    that was sent but whose answer never arrived or was refused unread for its size
    (the provider may have charged it).

    Every string is cleaned when the answer is parsed (see
    :mod:`~mobile_status_dagster.core.client.response`): printable, encodable as UTF-8,
    bounded. ``operator`` is one of ``SERVING_OPERATORS`` or ``None`` (an unrecognized
    operator is quoted in ``message``); ``order_number`` is at most 64 printable ASCII
    characters (a dirty one is kept cleaned, and ``message`` says so).
    """

    attempt: int
    requested_at: datetime
    latency_ms: float
    http_status: int | None
    code: int | None
    message: str | None
    order_number: str | None
    status: Status | None
    operator: str | None
    billed: bool
    possibly_billed: bool
    error: MobileStatusError | None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome for one number after all its attempts.

    ``status`` is set when the provider answered (``Status.UNKNOWN`` included);
    otherwise ``error`` says why not. ``attempts`` holds every attempt, in order.
    """

    mobile: str
    status: Status | None
    operator: str | None
    order_number: str | None
    code: int | None
    message: str | None
    attempts: tuple[Attempt, ...]
    error: MobileStatusError | None

    @property
    def answered(self) -> bool:
        """The provider gave a status for this number."""
        return self.status is not None

    @property
    def billed(self) -> bool:
        """An attempt was charged (a definitive answer)."""
        return any(a.billed for a in self.attempts)

    @property
    def possibly_billed(self) -> bool:
        """An attempt may have been charged without its answer arriving."""
        return any(a.possibly_billed for a in self.attempts)

    @property
    def latency_ms(self) -> float:
        """Time spent in HTTP attempts for this number, in milliseconds."""
        return sum(a.latency_ms for a in self.attempts)
