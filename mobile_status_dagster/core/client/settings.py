"""The client's settings, validated once, with the token kept secret."""

from __future__ import annotations

import ipaddress
import logging
import math
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from mobile_status_dagster.core.errors import ConfigurationError

log = logging.getLogger(__name__)

TokenPlacement = Literal["header", "query"]


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
    token_placement: TokenPlacement = "header"
    timeout_s: float = 10.0
    max_concurrency: int = 64
    qps: float | None = None
    max_retries: int = 3
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0

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
        object.__setattr__(self, "base_url", _validated_base_url(self.base_url))
        _check_token(self.secret)
        if self.token_placement not in ("header", "query"):
            raise ConfigurationError("token_placement", "must be 'header' or 'query'")
        _check_positive("timeout_s", self.timeout_s)
        if not _is_int(self.max_concurrency) or self.max_concurrency < 1:
            raise ConfigurationError("max_concurrency", "must be an integer >= 1")
        if self.qps is not None:
            _check_positive("qps", self.qps)
        if not _is_int(self.max_retries) or self.max_retries < 0:
            raise ConfigurationError("max_retries", "must be an integer >= 0")
        _check_positive("backoff_initial_s", self.backoff_initial_s, allow_zero=True)
        _check_positive("backoff_max_s", self.backoff_max_s, allow_zero=True)
        _warn_if_token_in_clear(self.base_url)


def _validated_base_url(base_url: str) -> str:
    if not isinstance(base_url, str) or not base_url.strip():
        raise ConfigurationError("base_url", "is empty; set the account's provider URL")
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            "base_url", f"{base_url!r} is not an http(s) URL such as https://host.example.com"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError("base_url", "must not carry a query string or fragment")
    return base_url.strip().rstrip("/")


def _check_token(token: Secret) -> None:
    value = token.reveal()
    if not isinstance(value, str) or not value:
        raise ConfigurationError("token", "is empty; set the provider account token")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigurationError("token", "must be printable ASCII without spaces")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive(setting: str, value: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(setting, f"must be a finite number {bound}, got {value!r}")


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
