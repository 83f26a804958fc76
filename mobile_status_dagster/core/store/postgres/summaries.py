"""Derived tables and reads in PostgreSQL: the charges, the sorting summary, stale
partitions.

The twins of what :mod:`mobile_status_dagster.core.store.summaries` (DuckDB) offers
Dagster's derived assets, the automation sensor and the CLI's reports: same signatures
(a psycopg session instead of a DuckDB connection), same results. The rebuilds run the
very SQL of the DuckDB store (:func:`~mobile_status_dagster.core.store.schema.rebuild_summary_sql`,
:func:`~mobile_status_dagster.core.store.schema.rebuild_charges_sql`), valid in both.

Not here: the exports to CSV and Parquet (``export_set``). They are written by DuckDB's
``COPY … TO`` with its formula guard; a PostgreSQL export would copy the rows out to a
private DuckDB first, which is left for when the CLI exports from PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import psycopg

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.plan import fresh_sql
from mobile_status_dagster.core.store.postgres.reports import C
from mobile_status_dagster.core.store.postgres.run_rows import (
    PG_RUN_ROWS,
    Scratch,
    load_run_rows,
)
from mobile_status_dagster.core.store.postgres.schema import ensure_schema
from mobile_status_dagster.core.store.schema import (
    BILLED_CODES,
    Tables,
    rebuild_charges_sql,
    rebuild_summary_sql,
)
from mobile_status_dagster.core.store.source import Partition, SourceTable

PgConnection = psycopg.Connection[tuple[object, ...]]


def rebuild_charges(conn: PgConnection, *, tables: Tables) -> int:
    """Rebuild ``mobile_status_charges`` from the whole audit; return its number of rows.

    Not needed after a run: each journal fold adds its attempts to the charges in the
    transaction that appends them to the audit. This is the full rebuild on demand
    (after editing the audit by hand, say). Days are UTC calendar days of
    ``requested_at``.
    """
    ensure_schema(conn, tables)
    _in_one_transaction(conn, rebuild_charges_sql(tables))
    return row_count(conn, tables.charges)


def rebuild_summary(conn: PgConnection, *, tables: Tables) -> int:
    """Rebuild ``mobile_status_summary`` from every published row; return its number of rows.

    Not needed after a run: publishing a partition replaces its summary rows in the
    same transaction. This is the full rebuild on demand.
    """
    ensure_schema(conn, tables)
    _in_one_transaction(conn, rebuild_summary_sql(tables))
    return row_count(conn, tables.summary)


def summary_by_set_and_status(conn: PgConnection, *, tables: Tables) -> list[tuple[str, str, int]]:
    """``(set_id, status, numbers)`` from the summary table, sorted."""
    rows = conn.execute(
        f"SELECT set_id, status, sum(numbers) FROM {tables.summary} "
        f"GROUP BY set_id, status ORDER BY set_id {C}, status {C}"
    ).fetchall()
    return [(str(s), str(st), int(str(n))) for s, st, n in rows]


def charges_totals(conn: PgConnection, *, tables: Tables) -> list[tuple[str, int, int, Decimal]]:
    """``(currency, calls, billed calls, cost)`` over the charges table, one row per currency."""
    rows = conn.execute(
        f"SELECT currency, sum(calls), sum(billed_calls), sum(cost) FROM {tables.charges} "
        f"GROUP BY currency ORDER BY currency {C}"
    ).fetchall()
    return [(str(c), int(str(n)), int(str(b)), Decimal(str(cost))) for c, n, b, cost in rows]


def stale_partitions(
    conn: PgConnection,
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
    with Scratch() as work:
        load_run_rows(conn, source, partitions, work)
    fresh = fresh_sql("c", freshness, now="%(now)s", dialect="postgres")
    rows = conn.execute(
        f"""
        SELECT r.set_id FROM {PG_RUN_ROWS} r
        LEFT JOIN {tables.cache} c ON c.mobile = r.mobile
        WHERE r.valid
          AND (c.mobile IS NULL OR (c.status_code IN ({BILLED_CODES}) AND NOT {fresh}))
        GROUP BY r.set_id ORDER BY r.set_id {C}
        """,
        {"now": now},
    ).fetchall()
    return [str(row[0]) for row in rows]


def row_count(conn: PgConnection, table: str) -> int:
    """The number of rows of ``table`` (a quoted name, from :class:`Tables`)."""
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(str(row[0])) if row else 0


def _in_one_transaction(conn: PgConnection, script: str) -> None:
    """Run the ``;``-separated statements of ``script`` (no literal ``;`` in them) in one
    transaction."""
    with conn.transaction():
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
