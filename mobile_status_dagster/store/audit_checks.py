"""The SQL behind the asset checks: coverage, audit reconciliation, no double billing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb

from mobile_status_dagster.freshness import Freshness
from mobile_status_dagster.numbers import mask
from mobile_status_dagster.status import Status
from mobile_status_dagster.store.plan import RUN_ROWS, load_run_rows
from mobile_status_dagster.store.schema import AUDIT, CACHE, PUBLISHED, ensure_schema
from mobile_status_dagster.store.source import Partition, SourceTable

_EXAMPLES = 5


@dataclass(frozen=True)
class CheckOutcome:
    """Whether a check passed, how many problems it found, and masked examples."""

    passed: bool
    problems: int
    detail: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


def published_keys(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Partition keys that have rows in ``mobile_status``."""
    ensure_schema(conn)
    rows = conn.execute(f"SELECT DISTINCT set_id FROM {PUBLISHED} ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows]


def coverage(
    conn: duckdb.DuckDBPyConnection,
    source: SourceTable,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
) -> CheckOutcome:
    """Every valid number of each published partition has an answer in ``mobile_status``.

    Compares the source (as it is now) with the published rows: a valid number
    missing from the published partition, or published without a status, is a problem.
    """
    keys = published_keys(conn)
    if not keys:
        return CheckOutcome(True, 0)
    load_run_rows(conn, source, to_partitions(keys))
    problems = f"""
        SELECT r.set_id, r.mobile FROM (SELECT DISTINCT set_id, mobile FROM {RUN_ROWS}
                                        WHERE valid) r
        WHERE NOT EXISTS (
            SELECT 1 FROM {PUBLISHED} p
            WHERE p.set_id = r.set_id AND p.mobile = r.mobile
              AND (p.status_code IS NOT NULL OR p.invalid_reason IS NOT NULL))
    """
    return _outcome(conn, problems, lambda r: f"{r[0]}: {mask(str(r[1]))}")


def audit_reconciliation(conn: duckdb.DuckDBPyConnection) -> CheckOutcome:
    """Every billed answer's order number is a billed call in the audit; order numbers unique."""
    ensure_schema(conn)
    billed = ", ".join(str(s.value) for s in Status if s.billed)
    missing = _outcome(
        conn,
        f"""
        SELECT DISTINCT a.order_number FROM (
            SELECT order_number FROM {PUBLISHED} WHERE status_code IN ({billed})
            UNION ALL
            SELECT order_number FROM {CACHE} WHERE status_code IN ({billed})
        ) a
        WHERE a.order_number IS NULL OR NOT EXISTS (
            SELECT 1 FROM {AUDIT} c WHERE c.billed AND c.order_number = a.order_number)
        """,
        lambda r: f"not in audit: {r[0]}",
    )
    duplicated = _outcome(
        conn,
        f"""
        SELECT order_number FROM {AUDIT} WHERE order_number IS NOT NULL AND billed
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


def no_double_billing(conn: duckdb.DuckDBPyConnection, freshness: Freshness) -> CheckOutcome:
    """No number was billed again while its previous billed answer was still fresh.

    Calls made by a forced refresh (``reason = 'forced'``) are allowed to.
    """
    ensure_schema(conn)
    whens = " ".join(
        f"WHEN {s.value} THEN {int(a.total_seconds())}" for s, a in freshness.by_status.items()
    )
    default = int(freshness.max_age.total_seconds())
    age_s = f"CASE previous_status {whens} ELSE {default} END" if whens else str(default)
    problems = f"""
        SELECT mobile, order_number FROM (
            SELECT mobile, order_number, requested_at, reason,
                   lag(requested_at) OVER w AS previous_at,
                   lag(status_code) OVER w AS previous_status
            FROM {AUDIT} WHERE billed
            WINDOW w AS (PARTITION BY mobile ORDER BY requested_at)
        )
        WHERE previous_at IS NOT NULL AND reason IS DISTINCT FROM 'forced'
          AND requested_at < previous_at + to_seconds({age_s})
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
