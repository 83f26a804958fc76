"""The tables this library owns, created on first use.

``mobile_status_latest``  one row per number: its latest answer (the cache).
``provider_calls``        one row per provider attempt, appended, never rewritten (the audit);
                          ``reason`` says why the number was paid for: new, stale, retry
                          (last answer unknown or unusable) or forced (force_refresh).
``mobile_status``         the published result: one row per input row, per set.
``journal_segments``      which answer-journal segments were folded in (crash recovery).
``mobile_status_summary`` and ``mobile_status_charges``: the derived tables.

Every instance of the library (one per key prefix) owns its own set of these tables:
:class:`Tables` names them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store.number_sql import quote_identifier

CACHE = "mobile_status_latest"
AUDIT = "provider_calls"
PUBLISHED = "mobile_status"
SEGMENTS = "journal_segments"
SUMMARY = "mobile_status_summary"
CHARGES = "mobile_status_charges"
DEFAULT_SOURCE = "number_sets"

_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_]*")


@dataclass(frozen=True)
class Tables:
    """The names of the tables one instance owns: the default names, behind ``prefix``.

    ``Tables()`` names today's tables (``mobile_status``, ``provider_calls``, …);
    ``Tables("crm_")`` names ``crm_mobile_status``, ``crm_provider_calls``, …, so two
    instances (two source tables, two provider accounts) share one database without
    sharing a cache, an audit or published rows. Each property is a quoted identifier,
    ready for SQL.
    """

    prefix: str = ""

    def __post_init__(self) -> None:
        if not _PREFIX_PATTERN.fullmatch(self.prefix):
            raise ConfigurationError(
                "key_prefix", f"{self.prefix!r}: use letters, digits and underscores only"
            )

    def name(self, base: str) -> str:
        """The unquoted name of the table ``base`` (one of this module's constants)."""
        return self.prefix + base

    @property
    def cache(self) -> str:
        """The cache: one row per number, its latest answer."""
        return quote_identifier(self.name(CACHE))

    @property
    def audit(self) -> str:
        """The audit: one row per provider attempt."""
        return quote_identifier(self.name(AUDIT))

    @property
    def published(self) -> str:
        """The published result: one row per input row of each published partition."""
        return quote_identifier(self.name(PUBLISHED))

    @property
    def segments(self) -> str:
        """The journal segments already folded."""
        return quote_identifier(self.name(SEGMENTS))

    @property
    def summary(self) -> str:
        """Rows per set × status × operator × ported."""
        return quote_identifier(self.name(SUMMARY))

    @property
    def charges(self) -> str:
        """Calls and cost per day × set × run × currency."""
        return quote_identifier(self.name(CHARGES))


DEFAULT_TABLES = Tables()

MONEY = "DECIMAL(18, 6)"


def _ddl(tables: Tables) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {tables.cache} (
    mobile        VARCHAR NOT NULL,
    status_code   TINYINT,
    status        VARCHAR,
    operator      VARCHAR,
    order_number  VARCHAR,
    provider_code INTEGER,
    checked_at    TIMESTAMPTZ NOT NULL,
    run_id        VARCHAR
);
CREATE TABLE IF NOT EXISTS {tables.audit} (
    order_number     VARCHAR,
    mobile           VARCHAR NOT NULL,
    provider_code    INTEGER,
    provider_message VARCHAR,
    status_code      TINYINT,
    operator         VARCHAR,
    billed           BOOLEAN NOT NULL,
    possibly_billed  BOOLEAN NOT NULL,
    unit_price       {MONEY} NOT NULL,
    currency         VARCHAR NOT NULL,
    set_id           VARCHAR,
    run_id           VARCHAR NOT NULL,
    requested_at     TIMESTAMPTZ NOT NULL,
    latency_ms       DOUBLE,
    attempt          SMALLINT NOT NULL,
    http_status      SMALLINT,
    error            VARCHAR,
    reason           VARCHAR
);
CREATE TABLE IF NOT EXISTS {tables.published} (
    set_id          VARCHAR NOT NULL,
    mobile_raw      VARCHAR,
    mobile          VARCHAR,
    valid           BOOLEAN NOT NULL,
    invalid_reason  VARCHAR,
    status_code     TINYINT,
    status          VARCHAR,
    operator        VARCHAR,
    prefix_operator VARCHAR,
    ported          BOOLEAN,
    order_number    VARCHAR,
    checked_at      TIMESTAMPTZ,
    source          VARCHAR NOT NULL,
    run_id          VARCHAR
);
CREATE TABLE IF NOT EXISTS {tables.segments} (
    segment   VARCHAR PRIMARY KEY,
    run_id    VARCHAR,
    attempts  BIGINT,
    answers   BIGINT,
    folded_at TIMESTAMPTZ
);
"""


SOURCE_DDL = f"""
CREATE TABLE IF NOT EXISTS {DEFAULT_SOURCE} (
    set_id    VARCHAR NOT NULL,
    mobile    VARCHAR,
    loaded_at TIMESTAMPTZ DEFAULT current_timestamp
);
"""


def ensure_schema(conn: duckdb.DuckDBPyConnection, tables: Tables) -> None:
    """Create ``tables`` if they are missing (idempotent)."""
    conn.execute(_ddl(tables))


BILLED_CODES = ", ".join(str(s.value) for s in Status if s.billed)
"""The billed status codes as a SQL list body: ``1, 2, 3, 4, 5``."""


def status_label_sql(code_sql: str) -> str:
    """SQL mapping a status code expression to its label (``online``, …)."""
    whens = " ".join(f"WHEN {s.value} THEN '{s.label}'" for s in Status)
    return f"(CASE {code_sql} {whens} END)"
