"""Publishing partitions to a PostgreSQL store: the twin of
:func:`mobile_status_dagster.core.store.publish.publish_partitions`, with the same results.

Each partition is replaced whole or left untouched, all of them in one transaction, with
the DuckDB store's statements in PostgreSQL's dialect. Two things DuckDB gives for free
are made explicit:

- **One snapshot.** The transaction is ``REPEATABLE READ``, so the check for missing
  answers and the insert read the same cache even while another run folds answers
  into it (under ``READ COMMITTED`` each statement would see the latest commit: a number
  found answered could be published with the unknown answer folded in between).
- **One publisher at a time per set of tables.** Two runs replacing the same partition
  at once would each delete the rows they see and insert theirs, leaving both; a
  session advisory lock, taken before the snapshot, makes the second wait and then
  replace what the first published.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.fragments import in_list_param
from mobile_status_dagster.core.store.postgres.run_rows import (
    PG_RUN_ROWS,
    PgConnection,
    Scratch,
    load_run_rows,
    planner_settings,
)
from mobile_status_dagster.core.store.publish import (
    PartitionOutcome,
    Tally,
    charges_by_set,
    charges_sql,
    complete_partitions,
    counts_sql,
    insert_sql,
    partition_outcomes,
    published_outcome,
    tallies_by_set,
    tally_sql,
)
from mobile_status_dagster.core.store.schema import Tables, summary_rows_sql
from mobile_status_dagster.core.store.source import Partition, SourceTable

__all__ = ["publish_key", "publish_partitions"]

_IN_SETS = in_list_param("set_id", "set_ids", "postgres")


def publish_key(tables: Tables) -> str:
    """The advisory lock's key text: one publisher at a time per instance (tables prefix)."""
    return f"mobile_status_dagster:publish:{tables.prefix}"


def publish_partitions(
    conn: PgConnection,
    source: SourceTable,
    partitions: Sequence[Partition],
    *,
    tables: Tables,
    run_id: str,
    freshness: Freshness,
    now: datetime,
    force_refresh: bool = False,
) -> list[PartitionOutcome]:
    """Publish every partition whose valid numbers all have a usable answer.

    The same outcomes and rows as
    :func:`mobile_status_dagster.core.store.publish.publish_partitions`: usable is
    answered in this run, or (unless ``force_refresh``) fresh in the cache at ``now``;
    the published rows and summary rows of every partition that can be published are
    replaced in one transaction, the others left untouched; a partition without any
    source row is not published (``empty``). ``conn`` is an autocommit session.
    """
    with Scratch() as scratch:
        load_run_rows(conn, source, partitions, scratch)
    params: dict[str, Any] = {"now": now, "run_id": run_id, "force": force_refresh}
    with _one_publisher(conn, tables):
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            planner_settings(conn)
            tally = tally_sql(tables, freshness, dialect="postgres", run_rows=PG_RUN_ROWS)
            tallies = tallies_by_set(conn.execute(tally, params).fetchall())
            complete = complete_partitions(partitions, tallies)
            if complete:
                keys = {"set_ids": complete}
                conn.execute(f"DELETE FROM {tables.published} WHERE {_IN_SETS}", keys)
                conn.execute(
                    insert_sql(tables, dialect="postgres", run_rows=PG_RUN_ROWS),
                    {**keys, "run_id": run_id},
                )
                conn.execute(f"DELETE FROM {tables.summary} WHERE {_IN_SETS}", keys)
                own_rows = f"(SELECT * FROM {tables.published} WHERE {_IN_SETS}) AS own_rows"
                conn.execute(f"INSERT INTO {tables.summary} {summary_rows_sql(own_rows)}", keys)
        # Still the only publisher: the counts are of the rows this call published.
        counted = _counts(conn, tables, complete, run_id, tallies)
    return partition_outcomes(partitions, tallies, counted)


@contextlib.contextmanager
def _one_publisher(conn: PgConnection, tables: Tables) -> Iterator[None]:
    """Hold the publish lock of ``tables`` (waiting for another publisher) in ``conn``.

    A session lock, taken before the transaction so that its snapshot follows the other
    publisher's commit; it goes with the session if the process dies.
    """
    key = publish_key(tables)
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [key])
    try:
        yield
    finally:
        # A session broken by then has lost the lock with it.
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])


def _counts(
    conn: PgConnection,
    tables: Tables,
    set_ids: Sequence[str],
    run_id: str,
    tallies: dict[str, Tally],
) -> dict[str, PartitionOutcome]:
    """The published partitions' counts and charges, by set id.

    PostgreSQL has no ``histogram``: the statuses and operators are counted per set ×
    status × operator (a few rows per set) and summed here.
    """
    if not set_ids:
        return {}
    params: dict[str, Any] = {"set_ids": list(set_ids)}
    rows = conn.execute(counts_sql(tables, dialect="postgres"), params).fetchall()
    by_status: dict[str, dict[str, int]] = {}
    by_operator: dict[str, dict[str, int]] = {}
    for set_id, status, operator, count in conn.execute(
        f"""
        SELECT set_id, coalesce(status, 'none'), coalesce(operator, 'none'), count(*)
        FROM {tables.published} WHERE valid AND {_IN_SETS}
        GROUP BY 1, 2, 3
        """,
        params,
    ).fetchall():
        for histograms, value in ((by_status, status), (by_operator, operator)):
            histogram = histograms.setdefault(str(set_id), {})
            histogram[str(value)] = histogram.get(str(value), 0) + int(count)
    charges = charges_by_set(
        conn.execute(
            charges_sql(tables, dialect="postgres"), params | {"run_id": run_id}
        ).fetchall()
    )
    return {
        str(row[0]): published_outcome(
            tallies[str(row[0])],
            row,
            _sorted(by_status.get(str(row[0]))),
            _sorted(by_operator.get(str(row[0]))),
            charges.get(str(row[0])),
        )
        for row in rows
    }


def _sorted(histogram: dict[str, int] | None) -> dict[str, int]:
    """A histogram sorted by key, as the DuckDB store gives it (``{}`` for none)."""
    return dict(sorted((histogram or {}).items()))
