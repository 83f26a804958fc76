"""Deployment settings from the environment, each error naming its variable."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from mobile_status_dagster.core.errors import ConfigurationError

BASE_URL = "MOBILE_STATUS_BASE_URL"
TOKEN = "MOBILE_STATUS_TOKEN"  # noqa: S105 - the variable's name, not a token
DB = "MOBILE_STATUS_DB"
MAX_CONCURRENCY = "MOBILE_STATUS_MAX_CONCURRENCY"
QPS = "MOBILE_STATUS_QPS"
UNIT_PRICE = "MOBILE_STATUS_UNIT_PRICE"
TIMEOUT_S = "MOBILE_STATUS_TIMEOUT_S"
DUCKDB_MEMORY_LIMIT = "MOBILE_STATUS_DUCKDB_MEMORY_LIMIT"

DEFAULT_DB = "mobile_status.duckdb"
DEFAULT_DEMO_DIR = "demo_output"


@dataclass(frozen=True)
class DeploymentSettings:
    """The numeric and path settings, parsed at load.

    ``MOBILE_STATUS_BASE_URL`` and ``MOBILE_STATUS_TOKEN`` are read by the resource
    through ``dg.EnvVar`` at run start (so the token never enters the definitions);
    a base URL that is set but malformed is refused here, at load.
    """

    db: str
    max_concurrency: int
    qps: float | None
    unit_price: str
    timeout_s: float
    duckdb_memory_limit: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeploymentSettings:
        """Parse the environment (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        base_url = env.get(BASE_URL, "").strip()
        if base_url:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(BASE_URL, f"{base_url!r} is not an http(s) URL")
        db = env.get(DB, "").strip() or DEFAULT_DB
        return cls(
            db=db,
            max_concurrency=_integer(env, MAX_CONCURRENCY, 64, minimum=1),
            qps=_number(env, QPS, None),
            unit_price=_price(env),
            timeout_s=_number(env, TIMEOUT_S, 10.0) or 10.0,
            duckdb_memory_limit=_memory_limit(env),
        )


def _integer(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(name, f"{raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigurationError(name, f"must be >= {minimum}, got {value}")
    return value


def _number(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(name, f"{raw!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(name, f"must be a positive number, got {raw!r}")
    return value


def _memory_limit(env: Mapping[str, str]) -> str | None:
    raw = env.get(DUCKDB_MEMORY_LIMIT, "").strip()
    if raw and not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", raw, re.I):
        raise ConfigurationError(DUCKDB_MEMORY_LIMIT, f"{raw!r} is not a size such as 512MB")
    return raw or None


def _price(env: Mapping[str, str]) -> str:
    raw = env.get(UNIT_PRICE, "").strip() or "0"
    try:
        price = Decimal(raw)
    except InvalidOperation:
        raise ConfigurationError(UNIT_PRICE, f"{raw!r} is not a decimal number") from None
    if not price.is_finite() or price < 0:
        raise ConfigurationError(UNIT_PRICE, f"must be a number >= 0, got {raw!r}")
    return raw


def require_provider_env(environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start a run without the provider's URL and token, naming what is missing."""
    env = os.environ if environ is None else environ
    missing = [name for name in (BASE_URL, TOKEN) if not env.get(name, "").strip()]
    if missing:
        raise ConfigurationError(", ".join(missing), "not set; export it before enriching")
