"""The SQL behind the asset checks: coverage, audit reconciliation, no double billing.

Each check examines either what one run changed (``run_id``: the partitions it
published, the answers it was paid for) or, with ``run_id=None``, everything. A run's
own check costs what the run changed, whatever the warehouse holds: the rows of the
run are found through ``run_id``, and the rest of a table is only probed for the
run's order numbers and numbers.

The SQL and the flow of each check are written once, here, and run on either store
through a :class:`CheckSession` (this module's :class:`DuckDBChecks`, or PostgreSQL's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import duckdb

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.numbers import mask
from mobile_status_dagster.core.store.fragments import Dialect, placeholder
from mobile_status_dagster.core.store.plan import RUN_ROWS, load_run_rows, max_age_sql
from mobile_status_dagster.core.store.reports import published_set_ids, set_ids_published_by
from mobile_status_dagster.core.store.schema import BILLED_CODES, Tables, ensure_schema
from mobile_status_dagster.core.store.source import Partition, SourceTable

_EXAMPLES = 5
"""How many masked examples a check shows."""


@dataclass(frozen=True)
class CheckOutcome:
    """Whether a check passed, how many problems it found, and masked examples."""

    passed: bool
    problems: int
    detail: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


class CheckSession(Protocol):
    """How the checks run SQL on one store: :class:`DuckDBChecks`, or the PostgreSQL
    store's (:class:`~mobile_status_dagster.core.store.postgres.audit_checks.PostgresChecks`)."""

    @property
    def dialect(self) -> Dialect:
        """The SQL dialect of the store (its placeholders, its interval arithmetic)."""
        ...

    def fetch(self, sql: str, params: Mapping[str, str]) -> list[tuple[object, ...]]:
        """The rows of ``sql``."""
        ...

    def by_code_point(self, columns: Sequence[str]) -> str:
        """An ``ORDER BY`` list of ``columns``, text compared by code point."""
        ...


@dataclass(frozen=True)
class DuckDBChecks:
    """:class:`CheckSession` on a DuckDB connection (it compares text by code point)."""

    conn: duckdb.DuckDBPyConnection
    dialect: Dialect = "duckdb"

    def fetch(self, sql: str, params: Mapping[str, str]) -> list[tuple[object, ...]]:
        """The rows of ``sql``."""
        return self.conn.execute(sql, dict(params)).fetchall()

    def by_code_point(self, columns: Sequence[str]) -> str:
        """``columns`` as they are."""
        return ", ".join(columns)


def _exists(session: CheckSession, sql: str, params: Mapping[str, str]) -> bool:
    """Whether ``sql`` returns a row."""
    return session.fetch(f"SELECT EXISTS ({sql})", params) == [(True,)]


def _outcome(
    session: CheckSession,
    problems_sql: str,
    columns: Sequence[str],
    describe: Callable[[tuple[object, ...]], str],
    params: Mapping[str, str],
) -> CheckOutcome:
    """Count the rows of ``problems_sql`` in SQL; fetch only a few, as examples, ordered
    by ``columns`` (every column of the rows)."""
    ((found,),) = session.fetch(f"SELECT count(*) FROM ({problems_sql}) AS problems", params)
    count = int(str(found))
    examples = (
        session.fetch(
            f"SELECT * FROM ({problems_sql}) AS problems "
            f"ORDER BY {session.by_code_point(columns)} LIMIT {_EXAMPLES}",
            params,
        )
        if count
        else []
    )
    return CheckOutcome(count == 0, count, examples=[describe(r) for r in examples])


def coverage(
    conn: duckdb.DuckDBPyConnection,
    source: SourceTable,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
    *,
    tables: Tables,
    run_id: str | None = None,
) -> CheckOutcome:
    """Every valid number of each published partition has an answer in ``mobile_status``.

    Compares the source (as it is now) with the published rows: a valid number
    missing from the published partition, or published without a status, is a problem.
    With ``run_id``, only the partitions that run published.
    """
    keys = (
        published_set_ids(conn, tables=tables)
        if run_id is None
        else set_ids_published_by(conn, run_id, tables=tables)
    )
    if not keys:
        return CheckOutcome(True, 0)
    load_run_rows(conn, source, to_partitions(keys))
    return coverage_outcome(DuckDBChecks(conn), tables=tables, run_rows=RUN_ROWS)


def coverage_outcome(session: CheckSession, *, tables: Tables, run_rows: str) -> CheckOutcome:
    """The coverage problems of the valid numbers in ``run_rows`` (the partitions' rows)."""
    problems = f"""
        SELECT r.set_id, r.mobile FROM (SELECT DISTINCT set_id, mobile FROM {run_rows}
                                        WHERE valid) AS r
        WHERE NOT EXISTS (
            SELECT 1 FROM {tables.published} p
            WHERE p.set_id = r.set_id AND p.mobile = r.mobile
              AND (p.status_code IS NOT NULL OR p.invalid_reason IS NOT NULL))
    """
    return _outcome(
        session, problems, ("set_id", "mobile"), lambda r: f"{r[0]}: {mask(str(r[1]))}", {}
    )


def audit_reconciliation(
    conn: duckdb.DuckDBPyConnection, *, tables: Tables, run_id: str | None = None
) -> CheckOutcome:
    """Every billed answer's order number is a billed call in the audit; order numbers unique.

    With ``run_id``: the answers that run published or cached, and the order numbers it
    was billed for (checked for duplicates against the whole audit).
    """
    ensure_schema(conn, tables)
    return reconciliation_outcome(DuckDBChecks(conn), tables=tables, run_id=run_id)


def reconciliation_outcome(
    session: CheckSession, *, tables: Tables, run_id: str | None
) -> CheckOutcome:
    """:func:`audit_reconciliation` on ``session`` (its tables exist)."""
    params = {} if run_id is None else {"run_id": run_id}
    run = placeholder("run_id", session.dialect)
    of_run = "" if run_id is None else f" AND run_id = {run}"
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
                WHERE c.billed AND c.run_id = {run} AND c.order_number = a.order_number)
        """
        if not _exists(session, answers, params):
            answers = ""
    missing = (
        _outcome(
            session,
            f"""
            SELECT DISTINCT a.order_number FROM ({answers}) AS a
            WHERE a.order_number IS NULL OR NOT EXISTS (
                SELECT 1 FROM {tables.audit} c
                WHERE c.billed AND c.order_number = a.order_number)
            """,
            ("order_number",),
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
        f"WHERE billed AND run_id = {run})"
    )
    duplicated = _outcome(
        session,
        f"""
        SELECT order_number FROM {tables.audit}
        WHERE order_number IS NOT NULL AND billed{billed_by_run}
        GROUP BY order_number HAVING count(*) > 1
        """,
        ("order_number",),
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
    conn: duckdb.DuckDBPyConnection,
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
    return double_billing_outcome(DuckDBChecks(conn), freshness, tables=tables, run_id=run_id)


def double_billing_outcome(
    session: CheckSession, freshness: Freshness, *, tables: Tables, run_id: str | None
) -> CheckOutcome:
    """:func:`no_double_billing` on ``session`` (its tables exist)."""
    params = {} if run_id is None else {"run_id": run_id}
    billed_by_run = (
        ""
        if run_id is None
        else f" AND mobile IN (SELECT mobile FROM {tables.audit} "
        f"WHERE billed AND run_id = {placeholder('run_id', session.dialect)})"
    )
    max_age = max_age_sql("previous_status", freshness, dialect=session.dialect)
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
        session,
        problems,
        ("mobile", "order_number"),
        lambda r: f"{mask(str(r[0]))} billed again as {r[1]}",
        params,
    )
