"""Derived tables and reads: the charges, the sorting summary, stale partitions, exports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb

from mobile_status_dagster.core.errors import ExportError
from mobile_status_dagster.core.files import private_output
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store.connection import copy_target, transaction
from mobile_status_dagster.core.store.fragments import in_list
from mobile_status_dagster.core.store.number_sql import quote_identifier
from mobile_status_dagster.core.store.plan import RUN_ROWS, fresh_sql, load_run_rows
from mobile_status_dagster.core.store.schema import (
    BILLED_CODES,
    Tables,
    ensure_schema,
    rebuild_charges_sql,
    rebuild_summary_sql,
)
from mobile_status_dagster.core.store.source import Partition, SourceTable

EXPORT_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
FORMULA_START = "=+-@\t\r"
"""A CSV cell starting with one of these is a formula to a spreadsheet (OWASP, "CSV
injection"); a CSV export prefixes such a cell with ``'``."""
_EXPORT = "mobile_status_export"


def rebuild_charges(conn: duckdb.DuckDBPyConnection, *, tables: Tables) -> int:
    """Rebuild ``mobile_status_charges`` from the whole audit; return its number of rows.

    Not needed after a run: each journal fold adds its attempts to the charges in the
    transaction that appends them to the audit. This is the full rebuild on demand
    (after editing the audit by hand, say). Days are UTC calendar days of
    ``requested_at``.
    """
    ensure_schema(conn, tables)
    with transaction(conn):
        conn.execute(rebuild_charges_sql(tables))
    return row_count(conn, tables.charges)


def rebuild_summary(conn: duckdb.DuckDBPyConnection, *, tables: Tables) -> int:
    """Rebuild ``mobile_status_summary`` from every published row; return its number of rows.

    Not needed after a run: publishing a partition replaces its summary rows in the
    same transaction. This is the full rebuild on demand.
    """
    ensure_schema(conn, tables)
    with transaction(conn):
        conn.execute(rebuild_summary_sql(tables))
    return row_count(conn, tables.summary)


def summary_by_set_and_status(
    conn: duckdb.DuckDBPyConnection, *, tables: Tables
) -> list[tuple[str, str, int]]:
    """``(set_id, status, numbers)`` from the summary table, sorted."""
    rows = conn.execute(
        f"SELECT set_id, status, sum(numbers) FROM {tables.summary} GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return [(str(s), str(st), int(n)) for s, st, n in rows]


def charges_totals(
    conn: duckdb.DuckDBPyConnection, *, tables: Tables
) -> list[tuple[str, int, int, Decimal]]:
    """``(currency, calls, billed calls, cost)`` over the charges table, one row per currency."""
    rows = conn.execute(
        f"SELECT currency, sum(calls), sum(billed_calls), sum(cost) FROM {tables.charges} "
        "GROUP BY ALL ORDER BY 1"
    ).fetchall()
    return [(str(c), int(n), int(b), Decimal(cost)) for c, n, b, cost in rows]


def stale_partitions(
    conn: duckdb.DuckDBPyConnection,
    source: SourceTable,
    partitions: Sequence[Partition],
    *,
    tables: Tables,
    freshness: Freshness,
    now: datetime,
) -> list[str]:
    """Keys of ``partitions`` holding a valid number whose billed answer expired or is missing.

    Unknown answers do not make a partition stale: they are asked again whenever the
    partition runs, for free.
    """
    if not partitions:
        return []
    ensure_schema(conn, tables)
    load_run_rows(conn, source, partitions)
    fresh = fresh_sql("c", freshness)
    rows = conn.execute(
        f"""
        SELECT DISTINCT r.set_id FROM {RUN_ROWS} r
        LEFT JOIN {tables.cache} c ON c.mobile = r.mobile
        WHERE r.valid
          AND (c.mobile IS NULL OR (c.status_code IN ({BILLED_CODES}) AND NOT {fresh}))
        ORDER BY r.set_id
        """,
        {"now": now},
    ).fetchall()
    return [str(row[0]) for row in rows]


def export_set(
    conn: duckdb.DuckDBPyConnection,
    set_id: str,
    statuses: Sequence[Status],
    out: Path,
    *,
    tables: Tables,
) -> int:
    """Write the set's distinct numbers with one of ``statuses`` to ``out`` (.csv/.parquet).

    Columns: mobile, status, operator, prefix_operator, ported, checked_at. Returns the
    number of rows written.

    The file is readable by its owner only (``0600``): it is written into a private
    temporary file beside ``out`` and renamed over it, so no other user can read it,
    not even while it is written, and an existing ``out`` (or a symlink there) is
    replaced rather than written through. In a CSV export, a text cell a spreadsheet
    would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a
    carriage return: :data:`FORMULA_START`) gets a leading ``'``, as OWASP recommends;
    Parquet exports keep the values exactly.
    """
    check_export_target(out)
    ensure_schema(conn, tables)
    published = conn.execute(
        f"SELECT count(*) FROM {tables.published} WHERE set_id = ?", [set_id]
    ).fetchone()
    if not published or not published[0]:
        raise ExportError(no_published_rows(set_id))
    return write_export(conn, set_id, statuses, out, tables=tables)


def check_export_target(out: Path) -> str:
    """``csv`` or ``parquet``: the kind of export ``out`` names (``ExportError`` if none)."""
    kind = EXPORT_SUFFIXES.get(out.suffix.lower())
    if kind is None:
        raise ExportError(f"{out}: use a .csv or .parquet file name")
    if not out.parent.is_dir():
        raise ExportError(f"{out}: directory {out.parent} does not exist")
    if out.is_dir():
        raise ExportError(f"{out}: is a directory")
    return kind


def no_published_rows(set_id: str) -> str:
    """The message of an export of a set that has no published rows."""
    return f"set {set_id!r} has no published rows; enrich it first"


def write_export(
    conn: duckdb.DuckDBPyConnection,
    set_id: str,
    statuses: Sequence[Status],
    out: Path,
    *,
    tables: Tables,
) -> int:
    """Write the export of :func:`export_set` from ``tables.published`` (checked first)."""
    kind = check_export_target(out)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {_EXPORT} AS
        SELECT DISTINCT ON (mobile) mobile, status, operator, prefix_operator, ported, checked_at
        FROM {tables.published}
        WHERE set_id = ? AND valid AND {in_list("status_code", "?", "INTEGER")}
        ORDER BY mobile
        """,
        [set_id, [int(s) for s in statuses]],
    )
    select = _csv_safe_select(conn) if kind == "csv" else f"SELECT * FROM {_EXPORT}"
    options = "FORMAT csv, HEADER true" if kind == "csv" else "FORMAT parquet"
    try:
        with private_output(out) as temporary:
            conn.execute(
                f"COPY ({select} ORDER BY mobile) TO {copy_target(temporary)} "
                f"({options}, USE_TMP_FILE false)"
            )
    except OSError as error:
        raise ExportError(f"{out}: cannot be written ({error.strerror})") from None
    return row_count(conn, _EXPORT)


def _csv_safe_select(conn: duckdb.DuckDBPyConnection) -> str:
    """``SELECT`` of the export table with formulas neutralised in every text column.

    Every VARCHAR column is guarded, not a chosen few: the operator is the provider's
    text, and a column added later is covered too. The numbers are VARCHAR as well (a
    valid one starts with ``1``, so it is never changed); ``ported`` and ``checked_at``
    are not text and cannot start a formula.
    """
    columns = conn.execute(f"DESCRIBE {_EXPORT}").fetchall()
    starts = ", ".join(f"chr({ord(c)})" for c in FORMULA_START)
    parts = []
    for name, column_type, *_ in columns:
        column = quote_identifier(str(name))
        if str(column_type) == "VARCHAR":
            parts.append(
                f"CASE WHEN left({column}, 1) IN ({starts}) "
                f"THEN chr(39) || {column} ELSE {column} END AS {column}"
            )
        else:
            parts.append(column)
    return f"SELECT {', '.join(parts)} FROM {_EXPORT}"


def row_count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    """The number of rows of ``table`` (a quoted name, from :class:`Tables`)."""
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0
