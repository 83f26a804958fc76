"""The library's tables carry a schema version; older ones are migrated, newer ones refused."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from mobile_status_dagster.core.errors import SchemaVersionError
from mobile_status_dagster.core.store.schema import (
    DEFAULT_TABLES,
    SCHEMA_VERSION,
    Tables,
    ensure_schema,
)


def version_rows(conn: duckdb.DuckDBPyConnection, tables: Tables) -> list[int]:
    return [int(v) for (v,) in conn.execute(f"SELECT version FROM {tables.version}").fetchall()]


def test_a_new_database_records_the_current_version(db: Path) -> None:
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        ensure_schema(conn, DEFAULT_TABLES)  # idempotent: still one row
        assert version_rows(conn, DEFAULT_TABLES) == [SCHEMA_VERSION]


def test_tables_from_before_the_version_table_are_adopted_with_their_rows(db: Path) -> None:
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        conn.execute(
            "INSERT INTO mobile_status_latest VALUES "
            "('13912345678', 1, 'online', 'CM', 'ORDER1', 2000, now(), 'r1')"
        )
        conn.execute(f"DROP TABLE {DEFAULT_TABLES.version}")  # as an older release left it
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        assert version_rows(conn, DEFAULT_TABLES) == [SCHEMA_VERSION]
        assert conn.execute("SELECT order_number FROM mobile_status_latest").fetchall() == [
            ("ORDER1",)
        ]


def test_tables_of_a_newer_version_are_refused_and_left_alone(db: Path) -> None:
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        conn.execute(f"UPDATE {DEFAULT_TABLES.version} SET version = ?", [SCHEMA_VERSION + 1])
        with pytest.raises(SchemaVersionError, match=r"newer mobile_status_dagster.*upgrade"):
            ensure_schema(conn, DEFAULT_TABLES)
        assert version_rows(conn, DEFAULT_TABLES) == [SCHEMA_VERSION + 1]


def test_each_prefix_has_its_own_version(db: Path) -> None:
    crm = Tables("crm_")
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, crm)
        assert version_rows(conn, crm) == [SCHEMA_VERSION]
        tables = {t for (t,) in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "mobile_status_schema" not in tables  # the default instance was not touched
        assert "crm_mobile_status_schema" in tables
