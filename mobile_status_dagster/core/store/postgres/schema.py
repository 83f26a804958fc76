"""The library's tables in PostgreSQL: the DuckDB store's tables, plus the keys and
indexes that let a run find its rows without reading whole tables.

Same names and columns as :mod:`mobile_status_dagster.core.store.schema` (whose DDL
this reuses, with PostgreSQL's names for two types); schema versions are the same.
Creating or migrating the tables takes a transaction-scoped advisory lock, so pods
starting at once do not race.
"""

from __future__ import annotations

import psycopg

from mobile_status_dagster.core.store.number_sql import quote_identifier
from mobile_status_dagster.core.store.schema import (
    CACHE,
    DEFAULT_SOURCE,
    PUBLISHED,
    SCHEMA_VERSION,
    SOURCE_DDL,
    Tables,
    refuse_newer_version,
    table_ddl,
)

_TYPES = {
    " TINYINT": " SMALLINT",
    " DOUBLE,": " DOUBLE PRECISION,",
    " DOUBLE\n": " DOUBLE PRECISION\n",
}

SCHEMA_LOCK = "mobile_status_dagster:schema"
"""Key text of the advisory lock taken while tables are created or migrated."""


def pg_types(ddl: str) -> str:
    """DuckDB DDL with the two types PostgreSQL names differently renamed."""
    for duck, pg in _TYPES.items():
        ddl = ddl.replace(duck, pg)
    return ddl


def _index(tables: Tables, table: str, columns: str, *, unique: bool = False) -> str:
    name = quote_identifier(f"{tables.prefix}{table}_{columns.replace(', ', '_')}_idx")
    kind = "UNIQUE INDEX" if unique else "INDEX"
    return (
        f"CREATE {kind} IF NOT EXISTS {name} ON {quote_identifier(tables.name(table))} ({columns})"
    )


def _keys_and_indexes(tables: Tables) -> list[str]:
    """One cache row per number (the key of the upsert), and the lookups runs make."""
    charges = quote_identifier(f"{tables.prefix}mobile_status_charges_key")
    return [
        _index(tables, CACHE, "mobile", unique=True),
        _index(tables, "provider_calls", "run_id"),
        _index(tables, "provider_calls", "order_number"),
        _index(tables, "provider_calls", "mobile"),
        _index(tables, PUBLISHED, "set_id"),
        _index(tables, PUBLISHED, "run_id"),
        _index(tables, "mobile_status_summary", "set_id"),
        f"CREATE UNIQUE INDEX IF NOT EXISTS {charges} ON {tables.charges} "
        "(day, set_id, run_id, currency) NULLS NOT DISTINCT",
    ]


def ensure_schema(conn: psycopg.Connection[tuple[object, ...]], tables: Tables) -> None:
    """Create ``tables`` (and their keys) if missing; refuse tables of a newer version.

    Raises :class:`SchemaVersionError` for tables written by a newer version of the
    library (nothing is changed then).
    """
    found = _recorded_version(conn, tables)
    if found == SCHEMA_VERSION:
        return
    refuse_newer_version(found, tables)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [SCHEMA_LOCK])
        if _recorded_version(conn, tables) == SCHEMA_VERSION:
            return  # another session created them while this one waited
        for statement in pg_types(table_ddl(tables)).split(";"):
            if statement.strip():
                conn.execute(statement)
        for statement in _keys_and_indexes(tables):
            conn.execute(statement)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {tables.version} "
            "(version INTEGER NOT NULL, migrated_at TIMESTAMPTZ NOT NULL)"
        )
        conn.execute(f"DELETE FROM {tables.version}")
        conn.execute(
            f"INSERT INTO {tables.version} VALUES (%s, now())",
            [SCHEMA_VERSION],
        )


PLAN_NUMBERS = "mobile_status_plan_numbers"
"""The base name of the ``UNLOGGED`` table a plan joins with the cache; its rows are never
committed (see :func:`~mobile_status_dagster.core.store.postgres.plan.plan_run`)."""


def plan_numbers_table(tables: Tables) -> str:
    """The quoted name of ``tables``' :data:`PLAN_NUMBERS` table."""
    return quote_identifier(tables.name(PLAN_NUMBERS))


def ensure_plan_numbers(conn: psycopg.Connection[tuple[object, ...]], tables: Tables) -> None:
    """Create ``tables``' :data:`PLAN_NUMBERS` table if missing (in its own transaction,
    under the schema lock: stores created before it get it on their first plan)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [plan_numbers_table(tables)])
    found = row.fetchone()
    if found is not None and found[0]:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [SCHEMA_LOCK])
        conn.execute(
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {plan_numbers_table(tables)} "
            "(word BIGINT, bit INTEGER, mobile VARCHAR)"
        )


def create_default_source(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """The default source table (``number_sets``), as the DuckDB store creates it, with an
    index on ``set_id``: a run reads its sets only, not every set loaded (the delta cost
    of ``make bench ARGS=postgres``, bench/README.md)."""
    conn.execute(SOURCE_DDL)
    conn.execute(
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(DEFAULT_SOURCE + '_set_id_idx')} "
        f"ON {DEFAULT_SOURCE} (set_id)"
    )


def _recorded_version(conn: psycopg.Connection[tuple[object, ...]], tables: Tables) -> int | None:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [tables.version]).fetchone()
    if not row or not row[0]:
        return None
    version = conn.execute(f"SELECT max(version) FROM {tables.version}").fetchone()
    return None if version is None or version[0] is None else int(str(version[0]))
