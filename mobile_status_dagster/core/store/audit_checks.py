"""The SQL behind the asset checks: coverage, audit reconciliation, no double billing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.numbers import mask
from mobile_status_dagster.core.store.plan import RUN_ROWS, load_run_rows, max_age_sql
from mobile_status_dagster.core.store.reports import published_set_ids
from mobile_status_dagster.core.store.schema import BILLED_CODES, Tables, ensure_schema
from mobile_status_dagster.core.store.source import Partition, SourceTable

_EXAMPLES = 5


@dataclass(frozen=True)
class CheckOutcome:
    """Whether a check passed, how many problems it found, and masked examples."""

    passed: bool
    problems: int
    detail: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


def coverage(
    conn: duckdb.DuckDBPyConnection,
    source: SourceTable,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
    *,
    tables: Tables,
) -> CheckOutcome:
    """Every valid number of each published partition has an answer in ``mobile_status``.

    Compares the source (as it is now) with the published rows: a valid number
    missing from the published partition, or published without a status, is a problem.
    """
    keys = published_set_ids(conn, tables=tables)
    if not keys:
        return CheckOutcome(True, 0)
    load_run_rows(conn, source, to_partitions(keys))
    problems = f"""
        SELECT r.set_id, r.mobile FROM (SELECT DISTINCT set_id, mobile FROM {RUN_ROWS}
                                        WHERE valid) r
        WHERE NOT EXISTS (
            SELECT 1 FROM {tables.published} p
            WHERE p.set_id = r.set_id AND p.mobile = r.mobile
              AND (p.status_code IS NOT NULL OR p.invalid_reason IS NOT NULL))
    """
    return _outcome(conn, problems, lambda r: f"{r[0]}: {mask(str(r[1]))}")


def audit_reconciliation(conn: duckdb.DuckDBPyConnection, *, tables: Tables) -> CheckOutcome:
    """Every billed answer's order number is a billed call in the audit; order numbers unique."""
    ensure_schema(conn, tables)
    missing = _outcome(
        conn,
        f"""
        SELECT DISTINCT a.order_number FROM (
            SELECT order_number FROM {tables.published} WHERE status_code IN ({BILLED_CODES})
            UNION ALL
            SELECT order_number FROM {tables.cache} WHERE status_code IN ({BILLED_CODES})
        ) a
        WHERE a.order_number IS NULL OR NOT EXISTS (
            SELECT 1 FROM {tables.audit} c WHERE c.billed AND c.order_number = a.order_number)
        """,
        lambda r: f"not in audit: {r[0]}",
    )
    duplicated = _outcome(
        conn,
        f"""
        SELECT order_number FROM {tables.audit} WHERE order_number IS NOT NULL AND billed
        GROUP BY order_number HAVING count(*) > 1
        """,
        lambda r: f"duplicated: {r[0]}",
    )
    problems = missing.problems + duplicated.problems
    return CheckOutcome(
        problems == 0,
        problems,
        {
            "answers_without_audit": missing.problems,
            "duplicated_order_numbers": duplicated.problems,
        },
        missing.examples + duplicated.examples,
    )


def no_double_billing(
    conn: duckdb.DuckDBPyConnection, freshness: Freshness, *, tables: Tables
) -> CheckOutcome:
    """No number was billed again while its previous billed answer was still fresh.

    Calls made by a forced refresh (``reason = 'forced'``) are allowed to.
    """
    ensure_schema(conn, tables)
    problems = f"""
        SELECT mobile, order_number FROM (
            SELECT mobile, order_number, requested_at, reason,
                   lag(requested_at) OVER w AS previous_at,
                   lag(status_code) OVER w AS previous_status
            FROM {tables.audit} WHERE billed
            WINDOW w AS (PARTITION BY mobile ORDER BY requested_at)
        )
        WHERE previous_at IS NOT NULL AND reason IS DISTINCT FROM 'forced'
          AND requested_at < previous_at + {max_age_sql("previous_status", freshness)}
    """
    return _outcome(conn, problems, lambda r: f"{mask(str(r[0]))} billed again as {r[1]}")


def _outcome(
    conn: duckdb.DuckDBPyConnection,
    problems_sql: str,
    describe: Callable[[tuple[object, ...]], str],
) -> CheckOutcome:
    """Count the rows of ``problems_sql`` in SQL; fetch only a few, as examples."""
    row = conn.execute(f"SELECT count(*) FROM ({problems_sql})").fetchone()
    count = int(row[0]) if row else 0
    examples = (
        conn.execute(f"SELECT * FROM ({problems_sql}) ORDER BY ALL LIMIT {_EXAMPLES}").fetchall()
        if count
        else []
    )
    return CheckOutcome(passed=count == 0, problems=count, examples=[describe(r) for r in examples])
