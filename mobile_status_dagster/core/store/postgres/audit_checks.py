"""The SQL behind the asset checks in PostgreSQL: coverage, audit reconciliation, no
double billing.

The twins of :mod:`mobile_status_dagster.core.store.audit_checks` (DuckDB): same
signatures (a psycopg session instead of a DuckDB connection), same
:class:`~mobile_status_dagster.core.store.audit_checks.CheckOutcome`, same problems and
the same masked examples in the same order (text by code point, ``COLLATE "C"``, as in
DuckDB). Each check examines either what one run changed (``run_id``) or, with
``run_id=None``, everything; a run's rows are found through the ``run_id`` indexes, and
the rest of a table is only probed for the run's order numbers and numbers (the
``order_number`` and ``mobile`` indexes of the audit).

The max age of an answer is :func:`~mobile_status_dagster.core.store.plan.max_age_sql`
in its PostgreSQL dialect, so both stores share one definition of "fresh".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import psycopg

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.numbers import mask
from mobile_status_dagster.core.store.audit_checks import CheckOutcome
from mobile_status_dagster.core.store.plan import max_age_sql
from mobile_status_dagster.core.store.postgres.reports import (
    C,
    published_set_ids,
    set_ids_published_by,
)
from mobile_status_dagster.core.store.postgres.run_rows import (
    PG_RUN_ROWS,
    Scratch,
    load_run_rows,
)
from mobile_status_dagster.core.store.postgres.schema import ensure_schema
from mobile_status_dagster.core.store.schema import BILLED_CODES, Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable

PgConnection = psycopg.Connection[tuple[object, ...]]

_EXAMPLES = 5
_RUN_ID = "%(run_id)s"


def coverage(
    conn: PgConnection,
    source: SourceTable,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
    *,
    tables: Tables,
    run_id: str | None = None,
) -> CheckOutcome:
    """Every valid number of each published partition has an answer in ``mobile_status``.

    Compares the source (as it is now) with the published rows: a valid number
    missing from the published partition, or published without a status, is a problem.
    With ``run_id``, only the partitions that run published. The source rows are
    normalized by the number rules' one home (DuckDB SQL) into the session's TEMP table
    of run rows, as planning does.
    """
    keys = (
        published_set_ids(conn, tables=tables)
        if run_id is None
        else set_ids_published_by(conn, run_id, tables=tables)
    )
    if not keys:
        return CheckOutcome(True, 0)
    with Scratch() as work:
        load_run_rows(conn, source, to_partitions(keys), work)
    problems = f"""
        SELECT r.set_id, r.mobile FROM (SELECT DISTINCT set_id, mobile FROM {PG_RUN_ROWS}
                                        WHERE valid) AS r
        WHERE NOT EXISTS (
            SELECT 1 FROM {tables.published} p
            WHERE p.set_id = r.set_id AND p.mobile = r.mobile
              AND (p.status_code IS NOT NULL OR p.invalid_reason IS NOT NULL))
    """
    return _outcome(
        conn,
        problems,
        f"set_id {C}, mobile {C}",
        lambda r: f"{r[0]}: {mask(str(r[1]))}",
    )


def audit_reconciliation(
    conn: PgConnection, *, tables: Tables, run_id: str | None = None
) -> CheckOutcome:
    """Every billed answer's order number is a billed call in the audit; order numbers unique.

    With ``run_id``: the answers that run published or cached, and the order numbers it
    was billed for (checked for duplicates against the whole audit).
    """
    ensure_schema(conn, tables)
    params = {} if run_id is None else {"run_id": run_id}
    of_run = "" if run_id is None else f" AND run_id = {_RUN_ID}"
    answers = f"""
        SELECT order_number FROM {tables.published}
        WHERE status_code IN ({BILLED_CODES}){of_run}
        UNION
        SELECT order_number FROM {tables.cache} WHERE status_code IN ({BILLED_CODES}){of_run}
    """
    if run_id is not None:
        # A run's answers carry order numbers billed in that run: match those against the
        # run's own audit rows (found through run_id), and probe the whole audit only for
        # what is left, which is normally nothing.
        answers = f"""
            SELECT order_number FROM ({answers}) AS a
            WHERE order_number IS NULL OR NOT EXISTS (
                SELECT 1 FROM {tables.audit} c
                WHERE c.billed AND c.run_id = {_RUN_ID} AND c.order_number = a.order_number)
        """
        if not _exists(conn, answers, params):
            answers = ""
    missing = (
        _outcome(
            conn,
            f"""
            SELECT DISTINCT a.order_number FROM ({answers}) AS a
            WHERE a.order_number IS NULL OR NOT EXISTS (
                SELECT 1 FROM {tables.audit} c
                WHERE c.billed AND c.order_number = a.order_number)
            """,
            f"order_number {C}",
            lambda r: f"not in audit: {r[0]}",
            params,
        )
        if answers
        else CheckOutcome(True, 0)
    )
    billed_by_run = (
        ""
        if run_id is None
        else f" AND order_number IN (SELECT order_number FROM {tables.audit} "
        f"WHERE billed AND run_id = {_RUN_ID})"
    )
    duplicated = _outcome(
        conn,
        f"""
        SELECT order_number FROM {tables.audit}
        WHERE order_number IS NOT NULL AND billed{billed_by_run}
        GROUP BY order_number HAVING count(*) > 1
        """,
        f"order_number {C}",
        lambda r: f"duplicated: {r[0]}",
        params,
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
    conn: PgConnection,
    freshness: Freshness,
    *,
    tables: Tables,
    run_id: str | None = None,
) -> CheckOutcome:
    """No number was billed again while its previous billed answer was still fresh.

    Calls made by a forced refresh (``reason = 'forced'``) are allowed to. With
    ``run_id``: the numbers that run was billed for, over their whole billing history.
    """
    ensure_schema(conn, tables)
    params = {} if run_id is None else {"run_id": run_id}
    billed_by_run = (
        ""
        if run_id is None
        else f" AND mobile IN (SELECT mobile FROM {tables.audit} "
        f"WHERE billed AND run_id = {_RUN_ID})"
    )
    max_age = max_age_sql("previous_status", freshness, dialect="postgres")
    problems = f"""
        SELECT mobile, order_number FROM (
            SELECT mobile, order_number, requested_at, reason,
                   lag(requested_at) OVER w AS previous_at,
                   lag(status_code) OVER w AS previous_status
            FROM {tables.audit} WHERE billed{billed_by_run}
            WINDOW w AS (PARTITION BY mobile ORDER BY requested_at)
        ) AS billed_calls
        WHERE previous_at IS NOT NULL AND reason IS DISTINCT FROM 'forced'
          AND requested_at < previous_at + {max_age}
    """
    return _outcome(
        conn,
        problems,
        f"mobile {C}, order_number {C}",
        lambda r: f"{mask(str(r[0]))} billed again as {r[1]}",
        params,
    )


def _exists(conn: PgConnection, sql: str, params: Mapping[str, str]) -> bool:
    """Whether ``sql`` returns a row."""
    return conn.execute(f"SELECT EXISTS ({sql})", params or None).fetchone() == (True,)


def _outcome(
    conn: PgConnection,
    problems_sql: str,
    order_by: str,
    describe: Callable[[tuple[object, ...]], str],
    params: Mapping[str, str] | None = None,
) -> CheckOutcome:
    """Count the rows of ``problems_sql`` in SQL; fetch only a few, as examples, in the
    order ``order_by`` (DuckDB's ``ORDER BY ALL``: every column, by code point)."""
    bound = params or None
    row = conn.execute(f"SELECT count(*) FROM ({problems_sql}) AS problems", bound).fetchone()
    count = int(str(row[0])) if row else 0
    examples = (
        conn.execute(
            f"SELECT * FROM ({problems_sql}) AS problems ORDER BY {order_by} LIMIT {_EXAMPLES}",
            bound,
        ).fetchall()
        if count
        else []
    )
    return CheckOutcome(passed=count == 0, problems=count, examples=[describe(r) for r in examples])
