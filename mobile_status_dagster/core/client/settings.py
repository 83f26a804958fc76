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


#: Values longer than this are never quoted in an error: a token pasted into the wrong
#: setting must not be printed back (a token is 32 characters).
_QUOTE_AT_MOST = 20


def shown(value: object) -> str:
    """``value`` as an error message may quote it: ``repr`` if short, else only its length."""
    text = repr(value)
    if len(text) <= _QUOTE_AT_MOST and text.isprintable():
        return text
    return f"a value of {len(str(value))} characters (not shown)"


def _number_text(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class NumberSetting:
    """One numeric client setting: its name, default, range, and how text becomes it.

    The single home of each setting's rules: :class:`ClientSettings` checks with it,
    the Dagster resource and the component take their defaults and descriptions from
    it, and the environment settings parse with it (naming the variable). Every setting
    has both bounds, inclusive: a value outside them is refused, never clamped.
    """

    name: str
    summary: str
    default: float | None
    minimum: float
    maximum: float
    integer: bool = False

    @property
    def range_text(self) -> str:
        """``"an integer from 1 to 1024"``, ``"a number from 0.1 to 300"``."""
        kind = "an integer" if self.integer else "a number"
        return f"{kind} from {_number_text(self.minimum)} to {_number_text(self.maximum)}"

    @property
    def description(self) -> str:
        """What the setting does, its range and its default (shown in the Dagster UI)."""
        default = "no cap" if self.default is None else _number_text(self.default)
        allowed = self.range_text[0].upper() + self.range_text[1:]
        return f"{self.summary} {allowed}; default {default}."

    def check(self, value: object, setting: str | None = None) -> float | None:
        """``value`` if it is in range; ``None`` only for a setting whose default is ``None``.

        Raises :class:`ConfigurationError` naming ``setting`` (default: the setting's name).
        """
        name = setting or self.name
        if value is None and self.default is None:
            return None
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or (self.integer and not isinstance(value, int)):
            raise ConfigurationError(name, f"must be {self.range_text}, got {shown(value)}")
        assert isinstance(value, int | float)
        if not math.isfinite(value) or not self.minimum <= value <= self.maximum:
            raise ConfigurationError(name, f"must be {self.range_text}, got {shown(value)}")
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
            raise ConfigurationError(
                setting, f"{shown(text)} is not {kind} (it must be {self.range_text})"
            ) from None
        return self.check(value, setting)


TIMEOUT_S = NumberSetting(
    "timeout_s",
    "Seconds allowed for one attempt, connect to last byte; a slower answer is retried "
    "and audited as possibly billed.",
    10.0,
    0.1,
    300.0,
)
MAX_CONCURRENCY = NumberSetting(
    "max_concurrency", "Requests in flight at once.", 64, 1, 1024, integer=True
)
QPS = NumberSetting(
    "qps",
    "Calls per second at most (the account's QPS limit); None: no cap.",
    None,
    0.01,
    100_000.0,
)
MAX_RETRIES = NumberSetting(
    "max_retries",
    "Retries after the first attempt for retryable failures.",
    3,
    0,
    100,
    integer=True,
)
BACKOFF_INITIAL_S = NumberSetting(
    "backoff_initial_s",
    "First retry delay in seconds; doubles per retry, with full jitter.",
    0.2,
    0.0,
    60.0,
)
BACKOFF_MAX_S = NumberSetting(
    "backoff_max_s", "Cap on one retry delay, in seconds.", 10.0, 0.0, 300.0
)
NUMBER_SETTINGS: tuple[NumberSetting, ...] = (
    TIMEOUT_S,
    MAX_CONCURRENCY,
    QPS,
    MAX_RETRIES,
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
)
"""Every numeric client setting, in the order of :class:`ClientSettings`' fields."""


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
        for setting in NUMBER_SETTINGS:
            setting.check(getattr(self, setting.name))
        _warn_if_token_in_clear(self.base_url)


_URL_EXAMPLE = "such as https://abc.api.example.com"


def validated_base_url(base_url: object, setting: str = "base_url") -> str:
    """``base_url`` stripped of spaces and a trailing ``/``, if it is an http(s) URL.

    The one home of the URL rule. It never quotes the value back: a token pasted into
    the wrong variable must not be printed in a command's error or the UI's load error.
    It refuses credentials in the URL (``http://user:pass@host``), which would show in
    every ``repr`` of the settings; the token goes in its own setting.

    Raises :class:`ConfigurationError` naming ``setting``.
    """
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigurationError(setting, "is empty; set the account's provider URL")
    text = base_url.strip()
    if not text.isprintable() or any(char.isspace() for char in text):
        raise ConfigurationError(
            setting, "must be one URL without spaces or control characters (value not shown)"
        )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError:
        raise ConfigurationError(
            setting, f"is not a valid URL (value not shown); expected one {_URL_EXAMPLE}"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(
            setting,
            f"is not an http(s) URL: it must start with https:// or http:// (value not "
            f"shown); expected one {_URL_EXAMPLE}",
        )
    if "@" in parts.netloc:
        raise ConfigurationError(
            setting,
            "must not carry credentials (user:password@ before the host; not shown); "
            "the account token goes in the token setting (MOBILE_STATUS_TOKEN)",
        )
    if not parts.hostname:
        raise ConfigurationError(
            setting, f"has no host name (value not shown); expected a URL {_URL_EXAMPLE}"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            setting, "must not carry a query string or fragment (value not shown)"
        )
    return text.rstrip("/")


def redacted_url(url: object) -> str:
    """``url`` safe to print: any ``user:password@`` replaced by ``***@``.

    For showing a URL that was not validated yet (e.g. in a resource's ``repr``).
    """
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<not a valid URL>"
    if "@" not in parts.netloc:
        return text
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


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
