"""Read-only summaries of the published table and the audit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import duckdb

from mobile_status_dagster.core.store.fragments import in_list
from mobile_status_dagster.core.store.schema import Tables, ensure_schema


@dataclass(frozen=True)
class StatusCount:
    """Published rows of one set with one status and serving operator."""

    set_id: str
    status: str
    operator: str
    rows: int


@dataclass(frozen=True)
class Charges:
    """Calls and money for a group of runs."""

    calls: int
    billed: int
    possibly_billed: int
    cost: Decimal
    currency: str


def status_counts(
    conn: duckdb.DuckDBPyConnection, set_ids: Sequence[str], *, tables: Tables
) -> list[StatusCount]:
    """Rows per set × status × operator in ``mobile_status`` (invalid rows as ``invalid``)."""
    ensure_schema(conn, tables)
    rows = conn.execute(
        f"""
        SELECT set_id,
               CASE WHEN NOT valid THEN 'invalid' ELSE coalesce(status, 'none') END,
               coalesce(operator, '-'), count(*)
        FROM {tables.published} WHERE {in_list("set_id", "?")}
        GROUP BY ALL ORDER BY ALL
        """,
        [list(set_ids)],
    ).fetchall()
    return [StatusCount(str(s), str(st), str(op), int(n)) for s, st, op, n in rows]


_CHARGES_COLUMNS = """
    count(*), count(*) FILTER (WHERE billed), count(*) FILTER (WHERE possibly_billed),
    coalesce(sum(unit_price) FILTER (WHERE billed), 0), currency
"""


def charges_for_runs(
    conn: duckdb.DuckDBPyConnection, run_ids: Sequence[str], *, tables: Tables
) -> list[Charges]:
    """Calls, billed calls and cost in ``provider_calls`` for ``run_ids``, one row per currency."""
    ensure_schema(conn, tables)
    rows = conn.execute(
        f"SELECT {_CHARGES_COLUMNS} FROM {tables.audit} "
        f"WHERE {in_list('run_id', '?')} GROUP BY currency ORDER BY currency",
        [list(run_ids)],
    ).fetchall()
    return [_charges(row) for row in rows]


def published_set_ids(conn: duckdb.DuckDBPyConnection, *, tables: Tables) -> list[str]:
    """Sets with rows in ``mobile_status``."""
    ensure_schema(conn, tables)
    rows = conn.execute(f"SELECT DISTINCT set_id FROM {tables.published} ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows]


def set_ids_published_by(
    conn: duckdb.DuckDBPyConnection, run_id: str, *, tables: Tables
) -> list[str]:
    """Sets whose rows in ``mobile_status`` were published by the run ``run_id``."""
    ensure_schema(conn, tables)
    rows = conn.execute(
        f"SELECT DISTINCT set_id FROM {tables.published} WHERE run_id = ? ORDER BY 1", [run_id]
    ).fetchall()
    return [str(r[0]) for r in rows]


def charges_by_set(
    conn: duckdb.DuckDBPyConnection, set_ids: Sequence[str], *, tables: Tables
) -> list[tuple[str, Charges]]:
    """Calls, billed calls and cost in ``provider_calls`` per set and currency, all runs.

    Costs in different currencies are never added up.
    """
    ensure_schema(conn, tables)
    rows = conn.execute(
        f"SELECT set_id, {_CHARGES_COLUMNS} FROM {tables.audit} "
        f"WHERE {in_list('set_id', '?')} "
        "GROUP BY set_id, currency ORDER BY set_id, currency",
        [list(set_ids)],
    ).fetchall()
    return [(str(row[0]), _charges(row[1:])) for row in rows]


def _charges(row: Sequence[object]) -> Charges:
    calls, billed, possibly, cost, currency = row
    return Charges(
        int(str(calls)), int(str(billed)), int(str(possibly)), Decimal(str(cost)), str(currency)
    )
