"""Read-only summaries of the published table and the audit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import duckdb

from mobile_status_dagster.store.schema import AUDIT, PUBLISHED, ensure_schema


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


def status_counts(conn: duckdb.DuckDBPyConnection, set_ids: Sequence[str]) -> list[StatusCount]:
    """Rows per set × status × operator in ``mobile_status`` (invalid rows as ``invalid``)."""
    ensure_schema(conn)
    rows = conn.execute(
        f"""
        SELECT set_id,
               CASE WHEN NOT valid THEN 'invalid' ELSE coalesce(status, 'none') END,
               coalesce(operator, '-'), count(*)
        FROM {PUBLISHED} WHERE set_id IN (SELECT unnest(CAST(? AS VARCHAR[])))
        GROUP BY ALL ORDER BY ALL
        """,
        [list(set_ids)],
    ).fetchall()
    return [StatusCount(str(s), str(st), str(op), int(n)) for s, st, op, n in rows]


def charges_for_runs(conn: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> Charges:
    """Calls, billed calls and cost recorded in ``provider_calls`` for ``run_ids``."""
    ensure_schema(conn)
    row = conn.execute(
        f"""
        SELECT count(*), count(*) FILTER (WHERE billed), count(*) FILTER (WHERE possibly_billed),
               coalesce(sum(unit_price) FILTER (WHERE billed), 0), coalesce(any_value(currency), '')
        FROM {AUDIT} WHERE run_id IN (SELECT unnest(CAST(? AS VARCHAR[])))
        """,
        [list(run_ids)],
    ).fetchone()
    assert row is not None
    return Charges(int(row[0]), int(row[1]), int(row[2]), Decimal(row[3]), str(row[4]))


def published_set_ids(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Sets with rows in ``mobile_status``."""
    ensure_schema(conn)
    return [
        str(r[0])
        for r in conn.execute(f"SELECT DISTINCT set_id FROM {PUBLISHED} ORDER BY 1").fetchall()
    ]


def charges_by_set(conn: duckdb.DuckDBPyConnection, set_ids: Sequence[str]) -> dict[str, Charges]:
    """Calls, billed calls and cost in ``provider_calls`` per set, over all runs."""
    ensure_schema(conn)
    rows = conn.execute(
        f"""
        SELECT s.set_id, count(a.mobile), count(*) FILTER (WHERE a.billed),
               count(*) FILTER (WHERE a.possibly_billed),
               coalesce(sum(a.unit_price) FILTER (WHERE a.billed), 0),
               coalesce(any_value(a.currency), '')
        FROM (SELECT unnest(CAST(? AS VARCHAR[])) AS set_id) s
        LEFT JOIN {AUDIT} a ON a.set_id = s.set_id
        GROUP BY s.set_id ORDER BY s.set_id
        """,
        [list(set_ids)],
    ).fetchall()
    return {
        str(r[0]): Charges(int(r[1]), int(r[2]), int(r[3]), Decimal(r[4]), str(r[5])) for r in rows
    }
