"""Loading number files into, and exporting sets from, a PostgreSQL store.

Both reuse the DuckDB code in an in-memory DuckDB
(:class:`~mobile_status_dagster.core.store.postgres.run_rows.Scratch`): a load reads,
normalizes and checks the file exactly as
:func:`mobile_status_dagster.core.store.load.load_file` does, then ``COPY``s its rows into
the PostgreSQL source table in one transaction; an export ``COPY``s the set's matching
published rows out of PostgreSQL and writes them with
:func:`mobile_status_dagster.core.store.summaries.write_export` (private file, formula
guard). The rows in transit are in the scratch directory only the user may enter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mobile_status_dagster.core.errors import ExportError
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store import load as duckdb_load
from mobile_status_dagster.core.store import schema as duckdb_schema
from mobile_status_dagster.core.store.connection import copy_target
from mobile_status_dagster.core.store.postgres.run_rows import (
    _CSV,
    PgConnection,
    Scratch,
    _utf8,
    copy_in,
    copy_out,
)
from mobile_status_dagster.core.store.postgres.schema import create_default_source, ensure_schema
from mobile_status_dagster.core.store.schema import DEFAULT_SOURCE, Tables
from mobile_status_dagster.core.store.summaries import (
    check_export_target,
    no_published_rows,
    write_export,
)

__all__ = ["export_set", "load_file"]

#: The published columns an export reads, each as text DuckDB casts back exactly
#: (``checked_at`` in UTC with its offset; booleans as ``true``/``false``).
_EXPORT_COLUMNS = (
    ("set_id", "set_id"),
    ("mobile", "mobile"),
    ("valid", "CAST(valid AS VARCHAR)"),
    ("status_code", "CAST(status_code AS VARCHAR)"),
    ("status", "status"),
    ("operator", "operator"),
    ("prefix_operator", "prefix_operator"),
    ("ported", "CAST(ported AS VARCHAR)"),
    (
        "checked_at",
        "to_char(checked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    ),
    ("source", "source"),
)


def load_file(
    conn: PgConnection,
    path: Path,
    *,
    set_id: str,
    column: str | None = None,
    replace: bool = False,
) -> duckdb_load.LoadResult:
    """Append the numbers in ``path`` to set ``set_id`` of ``number_sets`` in PostgreSQL
    (or replace the set), in one transaction; the same checks, rows and result as
    :func:`mobile_status_dagster.core.store.load.load_file`."""
    with Scratch() as scratch:
        result = duckdb_load.load_file(
            scratch.duck, path, set_id=set_id, column=column, replace=False
        )
        rows = scratch.new_file("load.csv")
        scratch.duck.execute(
            f"COPY (SELECT set_id, mobile FROM {DEFAULT_SOURCE}) "
            f"TO {copy_target(rows)} ({_CSV}, HEADER false, USE_TMP_FILE false)"
        )
        _utf8(conn)
        with conn.transaction():
            create_default_source(conn)
            if replace:
                conn.execute(f"DELETE FROM {DEFAULT_SOURCE} WHERE set_id = %s", [set_id])
            copy_in(conn, f"{DEFAULT_SOURCE} (set_id, mobile)", rows)
    return result


def export_set(
    conn: PgConnection,
    set_id: str,
    statuses: Sequence[Status],
    out: Path,
    *,
    tables: Tables,
) -> int:
    """Write the set's distinct numbers with one of ``statuses`` to ``out``: the file
    :func:`mobile_status_dagster.core.store.summaries.export_set` writes."""
    check_export_target(out)
    ensure_schema(conn, tables)
    published = conn.execute(
        f"SELECT count(*) FROM {tables.published} WHERE set_id = %s", [set_id]
    ).fetchone()
    if not published or not int(str(published[0])):
        raise ExportError(no_published_rows(set_id))
    codes = [int(s) for s in statuses]
    names = ", ".join(name for name, _ in _EXPORT_COLUMNS)
    selected = ", ".join(f"{expression} AS {name}" for name, expression in _EXPORT_COLUMNS)
    with Scratch() as scratch:
        duckdb_schema.ensure_schema(scratch.duck, tables)
        rows = scratch.new_file("export.csv")
        _utf8(conn)
        copy_out(
            conn,
            f"SELECT {selected} FROM {tables.published} WHERE set_id = %(set_id)s AND valid "
            "AND status_code = ANY(CAST(%(codes)s AS INTEGER[]))",
            {"set_id": set_id, "codes": codes},
            rows,
        )
        relation = scratch.read_csv_sql(rows, [name for name, _ in _EXPORT_COLUMNS])
        scratch.duck.execute(
            f"INSERT INTO {tables.published} ({names}) SELECT {names} FROM {relation}"
        )
        rows.unlink()
        return write_export(scratch.duck, set_id, statuses, out, tables=tables)
