"""The tables this library owns, created on first use.

``mobile_status_latest``  one row per number: its latest answer (the cache).
``provider_calls``        one row per provider attempt, appended, never rewritten (the audit);
                          ``reason`` says why the number was paid for: new, stale, retry
                          (last answer unknown or unusable) or forced (force_refresh).
``mobile_status``         the published result: one row per input row, per set.
``journal_segments``      which answer-journal segments were folded in (crash recovery).
``mobile_status_summary`` and ``mobile_status_charges``: the derived tables, kept current
                          as partitions are published and answers folded (each
                          change is applied in the transaction that makes it), so no
                          run rebuilds them from everything; :func:`summary_rows_sql`
                          and :func:`charges_rows_sql` say what they hold.

Every instance of the library (one per key prefix) owns its own set of these tables:
:class:`Tables` names them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from mobile_status_dagster.core.errors import ConfigurationError, SchemaVersionError
from mobile_status_dagster.core.money import MONEY_SQL
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store.connection import transaction
from mobile_status_dagster.core.store.number_sql import quote_identifier

CACHE = "mobile_status_latest"
AUDIT = "provider_calls"
PUBLISHED = "mobile_status"
SEGMENTS = "journal_segments"
SUMMARY = "mobile_status_summary"
CHARGES = "mobile_status_charges"
VERSION = "mobile_status_schema"
DEFAULT_SOURCE = "number_sets"

SCHEMA_VERSION = 2
"""The version of the tables this library writes (``mobile_status_schema.version``).

Version 1 is the first recorded one; a database written before the version table
existed has the same tables and is recorded as version 1 when first opened. Version 2
keeps the summary and the charges current as partitions are published and answers
folded (version 1 rebuilt them from everything on each run): they are rebuilt once,
from the published rows and the audit, when a version-1 database is first opened. A
change to the tables raises this number and adds a step to :data:`_MIGRATIONS`.
"""

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

    @property
    def version(self) -> str:
        """One row: the schema version of these tables."""
        return quote_identifier(self.name(VERSION))


DEFAULT_TABLES = Tables()

MONEY = MONEY_SQL
COST = "DECIMAL(38, 6)"
"""A sum of prices (``DECIMAL(18, 6)``): what DuckDB's ``sum`` of them gives."""


def table_ddl(tables: Tables) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of every table of ``tables`` (DuckDB's types; the
    PostgreSQL store maps the two it names differently, ``TINYINT`` and ``DOUBLE``)."""
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
CREATE TABLE IF NOT EXISTS {tables.summary} (
    set_id   VARCHAR NOT NULL,
    status   VARCHAR NOT NULL,
    operator VARCHAR,
    ported   BOOLEAN,
    numbers  BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {tables.charges} (
    day                   DATE NOT NULL,
    set_id                VARCHAR,
    run_id                VARCHAR NOT NULL,
    currency              VARCHAR NOT NULL,
    calls                 BIGINT NOT NULL,
    billed_calls          BIGINT NOT NULL,
    possibly_billed_calls BIGINT NOT NULL,
    cost                  {COST} NOT NULL
);
"""


def summary_rows_sql(published: str) -> str:
    """``SELECT`` (valid in DuckDB and PostgreSQL) of the summary rows of ``published``
    (the published table, or a subquery of its rows): rows per set × status × operator ×
    ported.

    Invalid rows count under status ``invalid``; valid rows without an answer under
    ``none``.
    """
    return f"""
        SELECT set_id,
               CASE WHEN NOT valid THEN 'invalid' ELSE coalesce(status, 'none') END AS status,
               operator, ported, count(*) AS numbers
        FROM {published}
        GROUP BY 1, 2, 3, 4
    """


def charges_rows_sql(attempts: str) -> str:
    """``SELECT`` (valid in DuckDB and PostgreSQL) of the charges rows of ``attempts`` (the
    audit, or a subquery of rows shaped like it): calls, billed calls and cost per UTC
    day × set × run × currency."""
    return f"""
        SELECT CAST(timezone('UTC', requested_at) AS DATE) AS day, set_id, run_id, currency,
               count(*) AS calls,
               count(*) FILTER (WHERE billed) AS billed_calls,
               count(*) FILTER (WHERE possibly_billed) AS possibly_billed_calls,
               CAST(coalesce(sum(unit_price) FILTER (WHERE billed), 0) AS {COST}) AS cost
        FROM {attempts}
        GROUP BY 1, 2, 3, 4
    """


def rebuild_summary_sql(tables: Tables) -> str:
    """Replace every summary row with those of the whole published table."""
    return f"""
        DELETE FROM {tables.summary};
        INSERT INTO {tables.summary} {summary_rows_sql(tables.published)}
            ORDER BY set_id, status, operator, ported;
    """


def rebuild_charges_sql(tables: Tables) -> str:
    """Replace every charges row with those of the whole audit."""
    return f"""
        DELETE FROM {tables.charges};
        INSERT INTO {tables.charges} {charges_rows_sql(tables.audit)}
            ORDER BY day, set_id, run_id;
    """


SOURCE_DDL = f"""
CREATE TABLE IF NOT EXISTS {DEFAULT_SOURCE} (
    set_id    VARCHAR NOT NULL,
    mobile    VARCHAR,
    loaded_at TIMESTAMPTZ DEFAULT current_timestamp
);
"""


def _derived_tables_kept_current(tables: Tables) -> str:
    """Version 1 → 2: the summary and charges tables (created by version 1's rebuilds
    with the same columns, or missing and just created) start from everything."""
    return rebuild_summary_sql(tables) + rebuild_charges_sql(tables)


_MIGRATIONS: dict[int, Callable[[Tables], str] | None] = {
    0: None,  # before the version table: the same tables as version 1
    1: _derived_tables_kept_current,
}
"""The SQL that takes the tables from version ``n`` to ``n + 1``."""


def refuse_newer_version(found: int | None, tables: Tables) -> None:
    """Raise :class:`SchemaVersionError` if ``found`` is newer than :data:`SCHEMA_VERSION`."""
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the tables {tables.name(PUBLISHED)!r} and its companions are at schema version "
            f"{found}, written by a newer mobile_status_dagster; this one reads up to version "
            f"{SCHEMA_VERSION}: upgrade the package (nothing was changed)"
        )


def ensure_schema(conn: duckdb.DuckDBPyConnection, tables: Tables) -> None:
    """Create ``tables`` if they are missing, or migrate them to :data:`SCHEMA_VERSION`.

    Raises :class:`SchemaVersionError` for tables written by a newer version of the
    library (nothing is changed then).
    """
    found = _recorded_version(conn, tables)
    if found == SCHEMA_VERSION:
        return
    refuse_newer_version(found, tables)
    # Tables without a version row predate it (version 0); no tables at all: a new database.
    version = found if found is not None else (0 if _has_tables(conn, tables) else None)
    with transaction(conn):
        conn.execute(table_ddl(tables))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {tables.version} "
            "(version INTEGER NOT NULL, migrated_at TIMESTAMPTZ NOT NULL)"
        )
        if version is not None:
            for step in range(version, SCHEMA_VERSION):
                migration = _MIGRATIONS[step]
                if migration is not None:
                    conn.execute(migration(tables))
        conn.execute(f"DELETE FROM {tables.version}")
        conn.execute(f"INSERT INTO {tables.version} VALUES (?, now())", [SCHEMA_VERSION])


def _recorded_version(conn: duckdb.DuckDBPyConnection, tables: Tables) -> int | None:
    try:
        row = conn.execute(f"SELECT max(version) FROM {tables.version}").fetchone()
    except duckdb.CatalogException:
        return None
    return None if row is None or row[0] is None else int(row[0])


def _has_tables(conn: duckdb.DuckDBPyConnection, tables: Tables) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE NOT temporary AND table_name = ?",
        [tables.name(CACHE)],
    ).fetchone()
    return bool(row and row[0])


BILLED_CODES = ", ".join(str(s.value) for s in Status if s.billed)
"""The billed status codes as a SQL list body: ``1, 2, 3, 4, 5``."""


def status_label_sql(code_sql: str) -> str:
    """SQL mapping a status code expression to its label (``online``, …)."""
    whens = " ".join(f"WHEN {s.value} THEN '{s.label}'" for s in Status)
    return f"(CASE {code_sql} {whens} END)"
