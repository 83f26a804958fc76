"""The client's settings, validated once, with the token kept secret."""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import urlsplit

from mobile_status_dagster.core.errors import ConfigurationError

log = logging.getLogger(__name__)

TokenPlacement = Literal["header", "query"]
TOKEN_PLACEMENTS: tuple[TokenPlacement, ...] = ("header", "query")
DEFAULT_TOKEN_PLACEMENT: TokenPlacement = "header"


@dataclass(frozen=True)
class NumberSetting:
    """One numeric client setting: its name, default, range, and how text becomes it.

    The single home of each setting's rules: :class:`ClientSettings` checks with it,
    the Dagster resource and the component take their defaults and descriptions from
    it, and the environment settings parse with it (naming the variable).
    """

    name: str
    description: str
    default: float | None
    minimum: float
    integer: bool = False
    minimum_allowed: bool = True
    maximum: float | None = None

    def check(self, value: object, setting: str | None = None) -> float | None:
        """``value`` if it is in range; ``None`` only for a setting whose default is ``None``.

        Raises :class:`ConfigurationError` naming ``setting`` (default: the setting's name).
        """
        name = setting or self.name
        if value is None and self.default is None:
            return None
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or (self.integer and not isinstance(value, int)):
            raise ConfigurationError(name, f"must be {self._range()}, got {value!r}")
        assert isinstance(value, int | float)
        if not math.isfinite(value) or not self._in_range(value):
            raise ConfigurationError(name, f"must be {self._range()}, got {value!r}")
        return value

    def parse(self, raw: str, setting: str) -> float | None:
        """The setting from text (an environment variable); empty text is the default."""
        text = raw.strip()
        if not text:
            return self.default
        try:
            value: float = int(text) if self.integer else float(text)
        except ValueError:
            kind = "an integer" if self.integer else "a number"
            raise ConfigurationError(setting, f"{text!r} is not {kind}") from None
        return self.check(value, setting)

    def _in_range(self, value: float) -> bool:
        low = value >= self.minimum if self.minimum_allowed else value > self.minimum
        return low and (self.maximum is None or value <= self.maximum)

    def _range(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low = f"{'>=' if self.minimum_allowed else '>'} {self.minimum:g}"
        high = "" if self.maximum is None else f" and <= {self.maximum:g}"
        return f"{kind} {low}{high}"


TIMEOUT_S = NumberSetting(
    "timeout_s",
    "Seconds allowed for one attempt, connect to last byte.",
    10.0,
    0,
    minimum_allowed=False,
)
MAX_CONCURRENCY = NumberSetting(
    "max_concurrency", "Requests in flight at once.", 64, 1, integer=True
)
QPS = NumberSetting(
    "qps",
    "Calls per second at most (the account's QPS); None: no cap.",
    None,
    0,
    minimum_allowed=False,
)
MAX_RETRIES = NumberSetting(
    "max_retries", "Retries after the first attempt for retryable failures.", 3, 0, integer=True
)
BACKOFF_INITIAL_S = NumberSetting(
    "backoff_initial_s", "First retry delay; doubles per retry, with full jitter.", 0.2, 0
)
BACKOFF_MAX_S = NumberSetting("backoff_max_s", "Cap on one retry delay.", 10.0, 0)


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class ClientSettings:
    """How to reach the provider and how hard to push it.

    Args:
        base_url: the account's allocated domain, e.g. ``https://abc.api.example.com``.
        token: the 32-character account token; stored as a :class:`Secret`.
        token_placement: ``"header"`` (default; a header named ``token``) or ``"query"``.
        timeout_s: seconds allowed for one attempt, connect to last byte.
        max_concurrency: requests in flight at once.
        qps: calls per second at most (a token bucket); ``None`` for no cap.
        max_retries: retries after the first attempt for retryable failures.
        backoff_initial_s: first retry delay; doubles per retry, with full jitter.
        backoff_max_s: cap on one retry delay.
    """

    base_url: str
    token: Secret | str = field(repr=False)
    token_placement: TokenPlacement = DEFAULT_TOKEN_PLACEMENT
    timeout_s: float = cast(float, TIMEOUT_S.default)
    max_concurrency: int = cast(int, MAX_CONCURRENCY.default)
    qps: float | None = QPS.default
    max_retries: int = cast(int, MAX_RETRIES.default)
    backoff_initial_s: float = cast(float, BACKOFF_INITIAL_S.default)
    backoff_max_s: float = cast(float, BACKOFF_MAX_S.default)

    @property
    def secret(self) -> Secret:
        """The token, as the :class:`Secret` it is stored as."""
        assert isinstance(self.token, Secret)  # __post_init__ wraps a plain string
        return self.token

    def __post_init__(self) -> None:
        if isinstance(self.token, str):
            object.__setattr__(self, "token", Secret(self.token))
        elif not isinstance(self.token, Secret):
            raise ConfigurationError("token", "is missing; set the provider account token")
        object.__setattr__(self, "base_url", validated_base_url(self.base_url))
        _check_token(self.secret)
        if self.token_placement not in TOKEN_PLACEMENTS:
            raise ConfigurationError("token_placement", "must be 'header' or 'query'")
        for setting in (
            TIMEOUT_S,
            MAX_CONCURRENCY,
            QPS,
            MAX_RETRIES,
            BACKOFF_INITIAL_S,
            BACKOFF_MAX_S,
        ):
            setting.check(getattr(self, setting.name))
        _warn_if_token_in_clear(self.base_url)


def validated_base_url(base_url: object, setting: str = "base_url") -> str:
    """``base_url`` stripped of spaces and a trailing ``/``, if it is an http(s) URL.

    Raises :class:`ConfigurationError` naming ``setting``.
    """
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigurationError(setting, "is empty; set the account's provider URL")
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            setting, f"{base_url!r} is not an http(s) URL such as https://host.example.com"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(setting, "must not carry a query string or fragment")
    return base_url.strip().rstrip("/")


def _check_token(token: Secret) -> None:
    value = token.reveal()
    if not isinstance(value, str) or not value:
        raise ConfigurationError("token", "is empty; set the provider account token")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigurationError("token", "must be printable ASCII without spaces")


_warned_hosts: set[str] = set()


def _warn_if_token_in_clear(base_url: str) -> None:
    """Plain http to anything but loopback sends the token in clear: say so, once per host."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme != "http" or _is_loopback(host) or host in _warned_hosts:
        return
    _warned_hosts.add(host)
    log.warning("base_url uses plain http to %s: the token travels unencrypted; use https", host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
