"""The SQL behind the asset checks in PostgreSQL: coverage, audit reconciliation, no
double billing.

The checks of :mod:`mobile_status_dagster.core.store.audit_checks` (their SQL and flow
are written there once), on a psycopg session: same signatures, same
:class:`~mobile_status_dagster.core.store.audit_checks.CheckOutcome`, same problems and
the same masked examples in the same order (text by code point, ``COLLATE "C"``, as in
DuckDB). Each check examines either what one run changed (``run_id``) or, with
``run_id=None``, everything; a run's rows are found through the ``run_id`` indexes, and
the rest of a table is only probed for the run's order numbers and numbers (the
``order_number`` and ``mobile`` indexes of the audit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import psycopg

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.audit_checks import (
    CheckOutcome,
    coverage_outcome,
    double_billing_outcome,
    reconciliation_outcome,
)
from mobile_status_dagster.core.store.fragments import Dialect
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
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable

PgConnection = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class PostgresChecks:
    """:class:`~mobile_status_dagster.core.store.audit_checks.CheckSession` on a psycopg
    session: examples in code-point order (``COLLATE "C"``), as in DuckDB."""

    conn: PgConnection
    dialect: Dialect = "postgres"

    def fetch(self, sql: str, params: Mapping[str, str]) -> list[tuple[object, ...]]:
        """The rows of ``sql``."""
        return self.conn.execute(sql, params or None).fetchall()

    def by_code_point(self, columns: Sequence[str]) -> str:
        """``columns``, each ``COLLATE "C"``."""
        return ", ".join(f"{column} {C}" for column in columns)


def coverage(
    conn: PgConnection,
    source: SourceTable,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
    *,
    tables: Tables,
    run_id: str | None = None,
) -> CheckOutcome:
    """Every valid number of each published partition has an answer in ``mobile_status``.

    The source rows are normalized by the number rules' one home (DuckDB SQL) into the
    session's TEMP table of run rows, as planning does.
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
    return coverage_outcome(PostgresChecks(conn), tables=tables, run_rows=PG_RUN_ROWS)


def audit_reconciliation(
    conn: PgConnection, *, tables: Tables, run_id: str | None = None
) -> CheckOutcome:
    """Every billed answer's order number is a billed call in the audit; order numbers unique."""
    ensure_schema(conn, tables)
    return reconciliation_outcome(PostgresChecks(conn), tables=tables, run_id=run_id)


def no_double_billing(
    conn: PgConnection,
    freshness: Freshness,
    *,
    tables: Tables,
    run_id: str | None = None,
) -> CheckOutcome:
    """No number was billed again while its previous billed answer was still fresh."""
    ensure_schema(conn, tables)
    return double_billing_outcome(PostgresChecks(conn), freshness, tables=tables, run_id=run_id)
