"""Planning a run against a PostgreSQL store: the twin of
:func:`mobile_status_dagster.core.store.plan.plan_run`, with the same results.

The partitions' rows are normalized by DuckDB into a TEMP table
(:func:`~mobile_status_dagster.core.store.postgres.run_rows.load_run_rows`); the join
with the cache, the counts and the numbers to send are PostgreSQL SQL, the same
statements as the DuckDB store's (:func:`~mobile_status_dagster.core.store.plan.run_numbers_sql`,
:func:`~mobile_status_dagster.core.store.plan.per_set_sql`) in PostgreSQL's dialect.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.plan import (
    RUN_NUMBERS,
    RunPlan,
    per_set_sql,
    run_numbers_sql,
    run_plan,
)
from mobile_status_dagster.core.store.postgres.run_rows import (
    PG_RUN_NUMBERS,
    PG_RUN_ROWS,
    PgConnection,
    Scratch,
    load_run_rows,
    planner_settings,
    write_spool_from,
)
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable, quote_table

__all__ = ["check_source_exists", "plan_run"]


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
    in it, and its TEMP tables stay until it ends.
    """
    params: dict[str, Any] = {"now": now, "force": force_refresh}
    with Scratch() as scratch:
        load_run_rows(conn, source, partitions, scratch)
        conn.execute(f"DROP TABLE IF EXISTS {PG_RUN_NUMBERS}")
        numbers = run_numbers_sql(tables, freshness, dialect="postgres", run_rows=PG_RUN_ROWS)
        with conn.transaction():
            planner_settings(conn)
            conn.execute(f"CREATE TEMP TABLE {RUN_NUMBERS} AS {numbers}", params)
            conn.execute(f"ANALYZE {PG_RUN_NUMBERS}")
            per_set = conn.execute(
                per_set_sql(dialect="postgres", run_rows=PG_RUN_ROWS, run_numbers=PG_RUN_NUMBERS)
            ).fetchall()
        to_send_sql = f"SELECT mobile, set_id, reason FROM {PG_RUN_NUMBERS} WHERE NOT fresh"
        row = conn.execute(f"SELECT count(*) FROM ({to_send_sql}) AS to_send").fetchone()
        to_send = int(row[0]) if row else 0
        if spool is not None:
            write_spool_from(conn, to_send_sql, spool, scratch)
    return run_plan(partitions, per_set, to_send)
