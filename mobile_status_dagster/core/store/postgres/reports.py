"""Read-only summaries of the published table and the audit, in PostgreSQL.

The twins of :mod:`mobile_status_dagster.core.store.reports` (DuckDB): same signatures
(a psycopg session instead of a DuckDB connection), same results, same result types.
Text sorts by code point (``COLLATE "C"``), as DuckDB's strings do, whatever the
database's collation; lists are bound as one array parameter (``= ANY(…)``, which the
indexes on ``set_id`` and ``run_id`` serve).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from mobile_status_dagster.core.store.postgres.schema import ensure_schema
from mobile_status_dagster.core.store.reports import (
    _CHARGES_COLUMNS,
    Charges,
    StatusCount,
    _charges,
)
from mobile_status_dagster.core.store.schema import Tables

PgConnection = psycopg.Connection[tuple[object, ...]]

C = 'COLLATE "C"'
"""Code-point order, DuckDB's order of strings."""


def any_of(expression: str) -> str:
    """A predicate: ``expression`` is in the text list bound to the next ``%s``."""
    return f"{expression} = ANY(CAST(%s AS VARCHAR[]))"


def status_counts(
    conn: PgConnection, set_ids: Sequence[str], *, tables: Tables
) -> list[StatusCount]:
    """Rows per set × status × operator in ``mobile_status`` (invalid rows as ``invalid``)."""
    ensure_schema(conn, tables)
    rows = conn.execute(
        f"""
        SELECT set_id, status, operator, numbers FROM (
            SELECT set_id,
                   CASE WHEN NOT valid THEN 'invalid' ELSE coalesce(status, 'none') END
                       AS status,
                   coalesce(operator, '-') AS operator, count(*) AS numbers
            FROM {tables.published} WHERE {any_of("set_id")}
            GROUP BY 1, 2, 3
        ) AS counts
        ORDER BY set_id {C}, status {C}, operator {C}, numbers
        """,
        [list(set_ids)],
    ).fetchall()
    return [StatusCount(str(s), str(st), str(op), int(str(n))) for s, st, op, n in rows]


def charges_for_runs(
    conn: PgConnection, run_ids: Sequence[str], *, tables: Tables
) -> list[Charges]:
    """Calls, billed calls and cost in ``provider_calls`` for ``run_ids``, one row per currency."""
    ensure_schema(conn, tables)
    rows = conn.execute(
        f"SELECT {_CHARGES_COLUMNS} FROM {tables.audit} "
        f"WHERE {any_of('run_id')} GROUP BY currency ORDER BY currency {C}",
        [list(run_ids)],
    ).fetchall()
    return [_charges(row) for row in rows]


def published_set_ids(conn: PgConnection, *, tables: Tables) -> list[str]:
    """Sets with rows in ``mobile_status``."""
    ensure_schema(conn, tables)
    rows = conn.execute(
        f"SELECT set_id FROM {tables.published} GROUP BY set_id ORDER BY set_id {C}"
    ).fetchall()
    return [str(r[0]) for r in rows]


def set_ids_published_by(conn: PgConnection, run_id: str, *, tables: Tables) -> list[str]:
    """Sets whose rows in ``mobile_status`` were published by the run ``run_id``."""
    ensure_schema(conn, tables)
    rows = conn.execute(
        f"SELECT set_id FROM {tables.published} WHERE run_id = %s "
        f"GROUP BY set_id ORDER BY set_id {C}",
        [run_id],
    ).fetchall()
    return [str(r[0]) for r in rows]


def charges_by_set(
    conn: PgConnection, set_ids: Sequence[str], *, tables: Tables
) -> list[tuple[str, Charges]]:
    """Calls, billed calls and cost in ``provider_calls`` per set and currency, all runs.

    Costs in different currencies are never added up.
    """
    ensure_schema(conn, tables)
    rows = conn.execute(
        f"SELECT set_id, {_CHARGES_COLUMNS} FROM {tables.audit} "
        f"WHERE {any_of('set_id')} "
        f"GROUP BY set_id, currency ORDER BY set_id {C}, currency {C}",
        [list(set_ids)],
    ).fetchall()
    return [(str(row[0]), _charges(row[1:])) for row in rows]
