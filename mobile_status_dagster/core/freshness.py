"""How long an answer stays fresh, i.e. is served from the cache instead of paid for again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.status import Status

DEFAULT_MAX_AGE = timedelta(days=30)


@dataclass(frozen=True)
class Freshness:
    """An answer is fresh while younger than ``max_age`` (or its status's override).

    ``Status.UNKNOWN`` is never fresh: it was not billed, so it is always asked again.

    Example::

        Freshness(max_age=timedelta(days=30), by_status={Status.VACANT: timedelta(days=7)})
    """

    max_age: timedelta = DEFAULT_MAX_AGE
    by_status: Mapping[Status, timedelta] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_age <= timedelta(0):
            raise ConfigurationError("max_age", "must be positive")
        for status, age in self.by_status.items():
            if status is Status.UNKNOWN:
                raise ConfigurationError("max_age_by_status", "unknown answers are never fresh")
            if age <= timedelta(0):
                raise ConfigurationError(f"max_age_by_status[{status.label}]", "must be positive")
        object.__setattr__(self, "by_status", MappingProxyType(dict(self.by_status)))

    def max_age_for(self, status: Status) -> timedelta | None:
        """How long an answer with ``status`` stays fresh; ``None`` for never."""
        if not status.billed:
            return None
        return self.by_status.get(status, self.max_age)

    @classmethod
    def from_days(
        cls, max_age_days: float, by_status_days: Mapping[str, float] | None = None
    ) -> Freshness:
        """Build from day counts keyed by status label, as configuration gives them."""
        overrides: dict[Status, timedelta] = {}
        for label, days in (by_status_days or {}).items():
            try:
                status = Status.from_label(label)
            except ValueError as error:
                raise ConfigurationError("max_age_by_status", str(error)) from None
            overrides[status] = timedelta(days=days)
        return cls(max_age=timedelta(days=max_age_days), by_status=overrides)
