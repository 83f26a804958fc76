"""Deployment settings from the environment, each error naming its variable."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from mobile_status_dagster.core.client import settings as client_settings
from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.money import DEFAULT_UNIT_PRICE, parse_price
from mobile_status_dagster.core.store.postgres.connection import PostgresTarget, is_postgres_url

BASE_URL = "MOBILE_STATUS_BASE_URL"
TOKEN = "MOBILE_STATUS_TOKEN"  # noqa: S105 - the variable's name, not a token
DB = "MOBILE_STATUS_DB"
STORE = "MOBILE_STATUS_STORE"
"""The store: a ``postgresql://`` URL (PostgreSQL) or a DuckDB file; unset, ``MOBILE_STATUS_DB``."""
STORE_SCHEMA = "MOBILE_STATUS_STORE_SCHEMA"
"""The PostgreSQL store's schema; unset, the database's ``search_path``."""
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
    a base URL that is set but malformed is refused here, at load. Each setting's
    default, range and parsing come from the client's own rules
    (:mod:`mobile_status_dagster.core.client.settings`, :mod:`~mobile_status_dagster.core.money`).
    """

    db: str
    max_concurrency: int = cast(int, client_settings.MAX_CONCURRENCY.default)
    qps: float | None = client_settings.QPS.default
    unit_price: str = DEFAULT_UNIT_PRICE
    timeout_s: float = cast(float, client_settings.TIMEOUT_S.default)
    duckdb_memory_limit: str | None = None
    store: str | None = field(default=None, repr=False)
    """The PostgreSQL store's URL (from ``MOBILE_STATUS_STORE``; it may hold a password, so
    it is not in ``repr``); ``None``: the DuckDB file :attr:`db`."""
    store_schema: str | None = None
    """The PostgreSQL store's schema (``MOBILE_STATUS_STORE_SCHEMA``); ``None``: the
    database's ``search_path``. Ignored for a DuckDB file."""

    @property
    def postgres(self) -> PostgresTarget | None:
        """The PostgreSQL store, or ``None`` for the DuckDB file."""
        return None if self.store is None else PostgresTarget(self.store, self.store_schema)

    @property
    def store_shown(self) -> str:
        """Where the store is, safe to print (the URL's password masked)."""
        target = self.postgres
        return self.db if target is None else target.shown

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DeploymentSettings:
        """Parse the environment (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        base_url = env.get(BASE_URL, "").strip()
        if base_url:
            client_settings.validated_base_url(base_url, setting=BASE_URL)
        price = env.get(UNIT_PRICE, "").strip() or DEFAULT_UNIT_PRICE
        parse_price(price, setting=UNIT_PRICE)
        db, store = store_location(env.get(STORE, ""), env.get(DB, "").strip() or DEFAULT_DB)
        return cls(
            store=store,
            store_schema=_store_schema(env),
            db=db,
            max_concurrency=cast(
                int,
                client_settings.MAX_CONCURRENCY.parse(
                    env.get(MAX_CONCURRENCY, ""), MAX_CONCURRENCY
                ),
            ),
            qps=client_settings.QPS.parse(env.get(QPS, ""), QPS),
            unit_price=price,
            timeout_s=cast(
                float, client_settings.TIMEOUT_S.parse(env.get(TIMEOUT_S, ""), TIMEOUT_S)
            ),
            duckdb_memory_limit=_memory_limit(env),
        )


def store_location(value: str, db: str, *, setting: str = STORE) -> tuple[str, str | None]:
    """``(duckdb file, postgres url)`` for a store ``value``: a ``postgresql://`` URL (checked,
    errors masked) keeps ``db``; any other value is a DuckDB file; empty: ``db``."""
    value = value.strip()
    if not value:
        return db, None
    if not is_postgres_url(value):
        return value, None
    try:
        PostgresTarget(value)
    except ConfigurationError as error:
        problem = str(error).removeprefix(f"{error.setting}: ")
        raise ConfigurationError(setting, problem) from None
    return db, value


def _store_schema(env: Mapping[str, str]) -> str | None:
    raw = env.get(STORE_SCHEMA)
    if raw is None:
        return None
    if not raw.strip():
        raise ConfigurationError(STORE_SCHEMA, "is set but empty; unset it for the search_path")
    return raw.strip()


def _memory_limit(env: Mapping[str, str]) -> str | None:
    raw = env.get(DUCKDB_MEMORY_LIMIT, "").strip()
    size = r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)"
    if raw and not re.fullmatch(size, raw, re.I):
        raise ConfigurationError(
            DUCKDB_MEMORY_LIMIT, f"{raw!r} is not a size such as 512MB, nor a share such as 80%"
        )
    return raw or None


def require_provider_env(environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start a run without the provider's URL and token, naming what is missing."""
    env = os.environ if environ is None else environ
    missing = [name for name in (BASE_URL, TOKEN) if not env.get(name, "").strip()]
    if missing:
        raise ConfigurationError(", ".join(missing), "not set; export it before enriching")
