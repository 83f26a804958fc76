"""Planning a run against a PostgreSQL store: the twin of
:func:`mobile_status_dagster.core.store.plan.plan_run`, with the same results.

Only the lookup of the run's numbers in the cache runs in PostgreSQL, where the cache
is. The partitions' rows are copied out and normalized by an in-memory DuckDB
(:func:`~mobile_status_dagster.core.store.postgres.run_rows.normalize_rows`), which
numbers the distinct valid ones ``0 … n-1``; those are copied into PostgreSQL and joined
with the cache, and what comes back is each number's verdict — fresh, ``stale`` or
``retry``; no cache row is ``new`` — as bitmaps over the positions. The counts per
partition and the spool are then the DuckDB store's own statements
(:func:`~mobile_status_dagster.core.store.plan.count_plan`).

Two choices are measured (``make bench ARGS=postgres``, bench/README.md). The numbers go
into the ``UNLOGGED`` table :data:`~mobile_status_dagster.core.store.postgres.schema.PLAN_NUMBERS`,
not a ``TEMP`` one, because PostgreSQL never scans a ``TEMP`` table in parallel: with it,
the join is a parallel hash join, the cache read by every worker at once. Its rows are
never committed: the transaction that copies them in is rolled back once the verdicts are
read, so concurrent plans see only their own rows, and a planning process that dies
leaves nothing behind. And the verdicts come back as bitmaps (one row per 63 numbers,
``bit_or`` in each worker) because sending every matched number through the parallel
plan's gather node and the wire took longer than the join itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import psycopg

from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.connection import copy_target
from mobile_status_dagster.core.store.plan import (
    RUN_NUMBERS,
    RUN_ROWS,
    RunPlan,
    count_plan,
    distinct_numbers_sql,
    fresh_sql,
    resend_reason_sql,
)
from mobile_status_dagster.core.store.postgres.run_rows import (
    ROWS,
    PgConnection,
    Scratch,
    copy_in,
    copy_out,
    normalize_rows,
    planner_settings,
)
from mobile_status_dagster.core.store.postgres.schema import ensure_plan_numbers, plan_numbers_table
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable, quote_table

__all__ = ["check_source_exists", "plan_run"]

_NUMBERS = "numbers"
"""The scratch DuckDB's table of the run's distinct valid numbers: ``mobile``, its first
partition ``set_id``, and its place in the verdict bitmaps: ``word`` and ``bit``, its
position (``0 … n-1``) divided by and modulo :data:`_WORD_BITS`."""
_BITMAPS = "verdicts"
"""The scratch DuckDB's table of the verdict bitmaps (see ``_copy_verdicts``)."""
_VERDICTS = ("fresh", "stale", "retry")
_WORD_BITS = 63
"""Numbers per bitmap word: a ``BIGINT``'s bits, the sign bit left alone."""


def check_source_exists(conn: PgConnection, source: SourceTable) -> None:
    """Raise :class:`ConfigurationError` naming the missing table or column (the messages
    of :meth:`SourceTable.check_exists`).

    The table is looked up as the run's queries name it (quoted: ``Numbers`` is not
    ``numbers``), in the session's ``search_path`` unless qualified by a schema; a view
    counts as a table.
    """
    missing = ConfigurationError(
        "source_table", f"table {source.table!r} does not exist in the database"
    )
    try:
        # In a transaction (a savepoint inside the caller's): a name PostgreSQL refuses
        # (a reference to another database, too many dots) leaves nothing aborted.
        with conn.transaction():
            row = conn.execute("SELECT CAST(to_regclass(%s) AS oid)", [quote_table(source.table)])
            found = row.fetchone()
    except psycopg.Error:
        raise missing from None
    if found is None or found[0] is None:
        raise missing
    columns = {
        str(name)
        for (name,) in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped",
            [found[0]],
        ).fetchall()
    }
    for setting, column in (
        ("mobile_column", source.mobile_column),
        ("set_column", source.set_column),
        ("time_column", source.time_column),
    ):
        if column is not None and column not in columns:
            raise ConfigurationError(setting, f"column {column!r} is not in table {source.table!r}")


def plan_run(
    conn: PgConnection,
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

    The same plan as :func:`mobile_status_dagster.core.store.plan.plan_run` for the same
    rows and cache: a number in several partitions is sent once, attributed to the
    first partition by key (code point order, whatever the database's collation); the
    spool is the same private Parquet file of ``(mobile, set_id, reason)`` ordered by
    partition, then number. ``conn`` is an autocommit session; the source table is read
    in it.
    """
    with Scratch() as scratch:
        duck = scratch.duck
        normalize_rows(conn, source, partitions, scratch, f"CREATE TEMP TABLE {RUN_ROWS} AS {ROWS}")
        duck.execute(
            f"CREATE TEMP TABLE {_NUMBERS} AS SELECT mobile, set_id, "
            f"CAST(position // {_WORD_BITS} AS BIGINT) AS word, "
            f"CAST(position % {_WORD_BITS} AS INTEGER) AS bit "
            f"FROM (SELECT *, row_number() OVER () - 1 AS position FROM ({distinct_numbers_sql()}))"
        )
        verdicts = scratch.new_file("verdicts.csv")
        if not force_refresh:  # forced, every number is sent whatever the cache holds
            numbers = scratch.new_file("numbers.csv")
            duck.execute(
                f"COPY (SELECT word, bit, mobile FROM {_NUMBERS}) TO {copy_target(numbers)} "
                "(FORMAT csv, HEADER false, USE_TMP_FILE false)"
            )
            _copy_verdicts(conn, tables, freshness, now, numbers, verdicts)
        columns = ("word", *_VERDICTS)
        typed = ", ".join(f"CAST({name} AS BIGINT) AS {name}" for name in columns)
        csv = scratch.read_csv_sql(verdicts, columns)
        duck.execute(f"CREATE TEMP TABLE {_BITMAPS} AS SELECT {typed} FROM {csv}")
        duck.execute(
            f"CREATE TEMP TABLE {RUN_NUMBERS} AS {_RUN_NUMBERS_SQL}", {"force": force_refresh}
        )
        return count_plan(duck, partitions, spool)


def _copy_verdicts(
    conn: PgConnection,
    tables: Tables,
    freshness: Freshness,
    now: datetime,
    numbers: Path,
    target: Path,
) -> None:
    """Write the verdict bitmaps of the ``(word, bit, mobile)`` rows of the CSV file
    ``numbers`` to the CSV file ``target``: per ``word`` with a cached number, one
    ``BIGINT`` per verdict of :data:`_VERDICTS`, with the ``bit`` of each of its numbers
    of that verdict set (a number with no cache row is in none: it is new)."""
    ensure_plan_numbers(conn, tables)
    plan_numbers = plan_numbers_table(tables)
    fresh = fresh_sql("c", freshness, now="%(now)s", dialect="postgres")
    verdict = f"CASE WHEN {fresh} THEN 'fresh' ELSE {resend_reason_sql('c')} END"
    bits = ", ".join(f"bit_or(bit) FILTER (WHERE verdict = '{name}')" for name in _VERDICTS)
    select = f"""
        SELECT word, {bits} FROM (
            SELECT n.word, CAST(1 AS BIGINT) << n.bit AS bit, {verdict} AS verdict
            FROM {plan_numbers} n JOIN {tables.cache} c ON c.mobile = n.mobile
        ) AS matched GROUP BY word
        """
    # The rows of earlier plans, rolled back, are dead: without them the table's size is
    # this plan's, and the statistics below are the join's (SKIP_LOCKED: never wait for
    # a concurrent plan; the estimate is then only rougher).
    conn.execute(f"VACUUM (SKIP_LOCKED) {plan_numbers}")
    with conn.transaction():
        planner_settings(conn)
        copy_in(conn, plan_numbers, numbers)
        conn.execute(f"ANALYZE (SKIP_LOCKED) {plan_numbers}")
        copy_out(conn, select, {"now": now}, target)
        raise psycopg.Rollback  # the numbers are never committed (module docstring)


_HAS = {name: f"(b.{name} & (CAST(1 AS BIGINT) << n.bit)) <> 0" for name in _VERDICTS}
_RUN_NUMBERS_SQL = f"""
    SELECT n.mobile, n.set_id, NOT $force AND coalesce({_HAS["fresh"]}, false) AS fresh,
           CASE WHEN $force THEN 'forced' WHEN {_HAS["stale"]} THEN 'stale'
                WHEN {_HAS["retry"]} THEN 'retry' WHEN {_HAS["fresh"]} THEN NULL
                ELSE 'new' END AS reason
    FROM {_NUMBERS} n LEFT JOIN {_BITMAPS} b USING (word)
    """
"""DuckDB ``SELECT`` of ``plan.RUN_NUMBERS`` from the distinct numbers and their verdict
bitmaps (parameter ``$force``)."""
