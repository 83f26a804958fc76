"""Planning a run in SQL: normalize, de-duplicate, and keep only what is not fresh."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from mobile_status_dagster.core.errors import NumberRejectedError
from mobile_status_dagster.core.files import private_output
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.connection import copy_target
from mobile_status_dagster.core.store.fragments import Dialect
from mobile_status_dagster.core.store.number_sql import (
    normalized_numbers_sql,
    register_number_rules,
)
from mobile_status_dagster.core.store.schema import BILLED_CODES, Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable, source_rows_sql

RUN_ROWS = "mobile_status_run_rows"
"""TEMP table holding the normalized rows of the partitions being planned or published."""
RUN_NUMBERS = "mobile_status_run_numbers"
"""TEMP table of a plan: each distinct valid number, its first partition, whether it is
fresh, and why it would be sent."""


@dataclass(frozen=True)
class SetPlan:
    """What a run would do for one partition."""

    set_id: str
    rows: int
    invalid: int
    distinct_valid: int
    fresh: int
    to_send: int


@dataclass(frozen=True)
class RunPlan:
    """What a run would do: per partition, and the de-duplicated total to send."""

    sets: tuple[SetPlan, ...]
    to_send: int


_MICROSECOND = timedelta(microseconds=1)


def max_age_sql(status_code_sql: str, freshness: Freshness, *, dialect: Dialect = "duckdb") -> str:
    """SQL for the max age, as an INTERVAL, of an answer with status ``status_code_sql``.

    The ages are whole microseconds from ``freshness``, written as integer literals, so
    the SQL and :meth:`Freshness.max_age_for` agree to the microsecond. DuckDB makes the
    interval with ``to_microseconds``; PostgreSQL (``dialect="postgres"``) multiplies
    ``INTERVAL '1 microsecond'``, which is exact for any age below 2^53 microseconds
    (285 years) and, like DuckDB's, has no day or month part (no calendar arithmetic).
    """
    default = freshness.max_age // _MICROSECOND
    whens = " ".join(
        f"WHEN {status.value} THEN {age // _MICROSECOND}"
        for status, age in freshness.by_status.items()
    )
    micros = f"(CASE {status_code_sql} {whens} ELSE {default} END)" if whens else str(default)
    if dialect == "postgres":
        return f"({micros} * INTERVAL '1 microsecond')"
    return f"to_microseconds({micros})"


def fresh_sql(
    alias: str, freshness: Freshness, *, now: str = "$now", dialect: Dialect = "duckdb"
) -> str:
    """A predicate: the cache row ``alias`` is younger than its max age and worth keeping.

    Worth keeping: a billed answer, or the provider's 4003 (it rejects a number our
    rules accept; asking again within ``max_age`` would only repeat the 4003). Unknown
    answers are never fresh, nor is any other row (an error): the predicate is false, never
    ``NULL``, for a row without a status code. ``now`` is the placeholder of the current
    time: DuckDB's named parameter ``$now`` by default, ``%(now)s`` for psycopg.
    """
    kept = (
        f"({alias}.status_code IN ({BILLED_CODES}) "
        f"OR ({alias}.status_code IS NULL AND {alias}.provider_code = {NumberRejectedError.code}))"
    )
    age = max_age_sql(f"{alias}.status_code", freshness, dialect=dialect)
    return f"coalesce({kept} AND {alias}.checked_at > CAST({now} AS TIMESTAMPTZ) - {age}, false)"


def run_numbers_sql(tables: Tables, freshness: Freshness) -> str:
    """``SELECT`` of :data:`RUN_NUMBERS` from :data:`RUN_ROWS` and the cache (parameters
    ``$now`` and ``$force``).

    A number in several partitions belongs to the first (``min(set_id)``, by code point).
    """
    fresh = fresh_sql("c", freshness)
    return f"""
        SELECT n.mobile, n.set_id, (NOT $force AND c.mobile IS NOT NULL AND {fresh}) AS fresh,
               CASE WHEN $force THEN 'forced' WHEN c.mobile IS NULL THEN 'new'
                    ELSE {resend_reason_sql("c")} END AS reason
        FROM ({distinct_numbers_sql()}) n
        LEFT JOIN {tables.cache} c ON c.mobile = n.mobile
        """


def distinct_numbers_sql() -> str:
    """``SELECT mobile, set_id``: each valid number of :data:`RUN_ROWS` once, with its
    first partition (``min(set_id)``, by code point)."""
    return f"SELECT mobile, min(set_id) AS set_id FROM {RUN_ROWS} WHERE valid GROUP BY mobile"


def resend_reason_sql(alias: str) -> str:
    """Why a number whose cache row ``alias`` is not fresh is sent again: ``stale`` (a
    billed answer, too old) or ``retry`` (unknown, or the provider's 4003)."""
    return f"CASE WHEN {alias}.status_code IN ({BILLED_CODES}) THEN 'stale' ELSE 'retry' END"


def per_set_sql() -> str:
    """``SELECT`` of a plan's counts per partition from :data:`RUN_ROWS` and
    :data:`RUN_NUMBERS`: ``set_id, rows, invalid, distinct_valid, fresh, to_send``."""
    return f"""
        WITH counts AS (
            SELECT set_id, count(*) AS rows, count(*) FILTER (WHERE NOT valid) AS invalid
            FROM {RUN_ROWS} GROUP BY set_id
        ), numbers AS (
            SELECT DISTINCT r.set_id, r.mobile, n.fresh
            FROM {RUN_ROWS} r JOIN {RUN_NUMBERS} n USING (mobile)
            WHERE r.valid
        )
        SELECT c.set_id, c.rows, c.invalid,
               count(n.mobile), count(n.mobile) FILTER (WHERE n.fresh),
               count(n.mobile) FILTER (WHERE NOT n.fresh)
        FROM counts c LEFT JOIN numbers n USING (set_id)
        GROUP BY ALL ORDER BY c.set_id
        """


def load_run_rows(
    conn: duckdb.DuckDBPyConnection, source: SourceTable, partitions: Sequence[Partition]
) -> None:
    """Normalize the source rows of ``partitions`` into the TEMP table :data:`RUN_ROWS`."""
    register_number_rules(conn)
    rows_sql, params = source_rows_sql(source, partitions)
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {RUN_ROWS} AS "
        + normalized_numbers_sql(f"({rows_sql})", "mobile_raw"),
        params,
    )


def plan_run(
    conn: duckdb.DuckDBPyConnection,
    source: SourceTable,
    partitions: Sequence[Partition],
    *,
    tables: Tables,
    freshness: Freshness,
    now: datetime,
    force_refresh: bool = False,
    spool: Path | None = None,
) -> RunPlan:
    """Count what a run over ``partitions`` would send; write the numbers to ``spool``.

    A number in several partitions is sent once, attributed to the first partition
    (by key) that holds it. The spool is a Parquet file of ``(mobile, set_id, reason)`` ordered
    by partition, so partitions finish in order; it is read back in batches. Each number
    carries why it is sent: ``new``, ``stale``, ``retry`` (its last answer was unknown or
    unusable) or ``forced``.
    """
    load_run_rows(conn, source, partitions)
    params: dict[str, Any] = {"now": now, "force": force_refresh}
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {RUN_NUMBERS} AS {run_numbers_sql(tables, freshness)}",
        params,
    )
    return count_plan(conn, partitions, spool)


def count_plan(
    conn: duckdb.DuckDBPyConnection, partitions: Sequence[Partition], spool: Path | None
) -> RunPlan:
    """The :class:`RunPlan` of ``partitions`` from the tables :data:`RUN_ROWS` and
    :data:`RUN_NUMBERS` of ``conn``; the numbers to send written to ``spool``."""
    per_set = conn.execute(per_set_sql()).fetchall()
    to_send_sql = f"SELECT mobile, set_id, reason FROM {RUN_NUMBERS} WHERE NOT fresh"
    (to_send,) = conn.execute(f"SELECT count(*) FROM ({to_send_sql})").fetchone() or (0,)
    if spool is not None:
        write_spool(conn, f"{to_send_sql} ORDER BY set_id, mobile", spool)
    planned = {
        str(row[0]): SetPlan(str(row[0]), *(int(value) for value in row[1:])) for row in per_set
    }
    sets = tuple(planned.get(p.key, SetPlan(p.key, 0, 0, 0, 0, 0)) for p in partitions)
    return RunPlan(sets=sets, to_send=int(to_send))


def write_spool(conn: duckdb.DuckDBPyConnection, select_sql: str, spool: Path) -> None:
    """Write the spool (every number to send, with its set id) readable by its owner only.

    DuckDB's ``COPY`` would create the file with the process umask (``0644`` under the
    usual ``022``), so it writes into a ``0600`` temporary file that is then renamed
    into place (:func:`~mobile_status_dagster.core.files.private_output`); the engine
    keeps the spool in the journal directory, itself ``0700``.
    """
    with private_output(spool) as temporary:
        conn.execute(
            f"COPY ({select_sql}) TO {copy_target(temporary)} (FORMAT parquet, USE_TMP_FILE false)"
        )
