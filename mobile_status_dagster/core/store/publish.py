"""Publishing partitions: each one replaced in one transaction, or not at all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from mobile_status_dagster.core.errors import NumberRejectedError
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import SERVING_OPERATORS
from mobile_status_dagster.core.store.connection import memory_limit_bytes, transaction
from mobile_status_dagster.core.store.fragments import (
    Dialect,
    in_list,
    in_list_param,
    placeholder,
)
from mobile_status_dagster.core.store.plan import RUN_ROWS, fresh_sql, load_run_rows
from mobile_status_dagster.core.store.schema import COST, Tables, summary_rows_sql
from mobile_status_dagster.core.store.source import Partition, SourceTable

#: ``invalid_reason`` of a number our rules accept but the provider rejected (4003).
PROVIDER_REJECTED = "provider_rejected"


@dataclass(frozen=True)
class PartitionOutcome:
    """A partition after publishing: published with its counts, or held back.

    ``rows`` counts input rows, ``numbers`` distinct valid numbers, ``sent`` those
    answered by the provider in this run. ``missing`` counts valid numbers with no
    usable answer; when it is not zero the partition was not published and its
    previous rows are untouched.
    """

    set_id: str
    published: bool
    empty: bool = False
    rows: int = 0
    numbers: int = 0
    sent: int = 0
    invalid: int = 0
    from_cache: int = 0
    from_provider: int = 0
    missing: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_operator: dict[str, int] = field(default_factory=dict)
    ported: int = 0
    billed: int = 0
    possibly_billed: int = 0
    cost: Decimal = Decimal(0)


def publish_partitions(
    conn: duckdb.DuckDBPyConnection,
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

    Usable: answered in this run, or (unless ``force_refresh``) fresh in the cache at
    ``now``. The rows in ``mobile_status`` of every partition that can be published, and
    their rows in the summary, are replaced in one transaction: each such partition is
    replaced whole, the others are left untouched. The work is done for all partitions
    at once (one join with the cache to find what is missing), and the rows are inserted
    in batches of partitions whose join fits in DuckDB's memory (:func:`insert_batches`),
    so publishing many partitions costs what their rows cost.
    A partition without any source row is not published (``empty``): a mistyped set id
    must not wipe what was published before.
    """
    load_run_rows(conn, source, partitions)
    params: dict[str, Any] = {"now": now, "run_id": run_id, "force": force_refresh}
    with transaction(conn):
        tallies = tallies_by_set(conn.execute(tally_sql(tables, freshness), params).fetchall())
        complete = complete_partitions(partitions, tallies)
        if complete:
            keys = {"set_ids": complete}
            conn.execute(f"DELETE FROM {tables.published} WHERE {_IN_SETS}", keys)
            rows_by_set = {key: tallies[key].rows for key in complete}
            for batch in insert_batches(memory_limit_bytes(conn), rows_by_set):
                conn.execute(insert_sql(tables), {"set_ids": batch, "run_id": run_id})
            _replace_summary(conn, tables, complete)
    counted = _counts(conn, tables, complete, run_id, tallies)
    return partition_outcomes(partitions, tallies, counted)


@dataclass(frozen=True)
class Tally:
    """A partition's rows and distinct numbers, counted before publishing it.

    ``missing``: valid numbers with no usable answer (the partition is published only
    when it is 0); ``numbers``: distinct numbers valid once published (the provider's
    4003 makes one invalid); ``sent``: distinct numbers answered in this run.
    """

    rows: int
    missing: int
    numbers: int
    sent: int


def tallies_by_set(rows: Sequence[Sequence[Any]]) -> dict[str, Tally]:
    """The rows of :func:`tally_sql` by set id."""
    return {str(row[0]): Tally(*(int(value) for value in row[1:])) for row in rows}


def tally_sql(
    tables: Tables, freshness: Freshness, *, dialect: Dialect = "duckdb", run_rows: str = RUN_ROWS
) -> str:
    """``SELECT set_id, rows, missing, numbers, sent`` per partition of ``run_rows`` (the
    columns of :class:`Tally`; parameters ``now``, ``run_id``, ``force``; valid in
    ``dialect``).

    Usable: answered in this run, or (unless forced) fresh in the cache. Missing, valid
    once published and sent are those of the cache row :func:`insert_sql` joins, so the
    distinct counts come from this one grouping instead of a ``count(DISTINCT …)`` of
    the published rows. The numbers are grouped first and counted after: DuckDB's
    grouping spills to disk under a memory limit, its ``count(DISTINCT …)`` ran out of
    memory at 10,000,000 rows under ``memory_limit = 256MB``.
    """
    fresh = fresh_sql("c", freshness, now=placeholder("now", dialect), dialect=dialect)
    run_id = placeholder("run_id", dialect)
    answered = f"coalesce(c.run_id = {run_id}, false)"
    usable = f"({answered} OR (NOT {placeholder('force', dialect)} AND {fresh}))"
    return f"""
                SELECT set_id, sum(rows), count(*) FILTER (WHERE missing),
                       count(*) FILTER (WHERE counted), count(*) FILTER (WHERE sent)
                FROM (
                    SELECT r.set_id, r.mobile, count(*) AS rows,
                           bool_or(r.valid AND (c.mobile IS NULL OR NOT {usable})) AS missing,
                           bool_or(r.valid AND NOT coalesce({_REJECTED}, false)) AS counted,
                           bool_or(r.valid AND {answered}) AS sent
                    FROM {run_rows} r LEFT JOIN {tables.cache} c ON c.mobile = r.mobile
                    GROUP BY r.set_id, r.mobile
                ) AS numbers
                GROUP BY set_id
                """


_REJECTED = f"c.status_code IS NULL AND c.provider_code = {NumberRejectedError.code}"
"""The cache row ``c`` is the provider's 4003: a number our rules accept, it rejects."""


#: About what one published row's join with the cache holds in DuckDB's memory: the
#: insert of a batch of ``memory limit / this`` rows fits under the limit. Measured at
#: ``256MB`` (bench/README.md, "Where the memory goes"): 10,000,000 rows in batches of
#: 1,500,000 inserted in 8.9–10.6 s, in one join 11.4–12.6 s (it spills), one set of
#: 500,000 at a time 16.2 s (the cache is read once per batch).
PUBLISHED_ROW_BYTES = 160


def insert_batches(limit: int | None, rows_by_set: Mapping[str, int]) -> list[list[str]]:
    """The set ids of ``rows_by_set`` (set id → rows), in order, in consecutive batches of
    about ``limit / PUBLISHED_ROW_BYTES`` rows each, so that each batch's join with the
    cache fits in DuckDB's memory limit of ``limit`` bytes instead of spilling; a
    partition bigger than that is a batch alone. All in one batch when the limit is not
    known (``None``: batching only saves time)."""
    if limit is None:
        return [list(rows_by_set)]
    budget = limit // PUBLISHED_ROW_BYTES
    batches: list[list[str]] = []
    rows = 0
    for set_id, count in rows_by_set.items():
        if not batches or rows + count > budget:
            batches.append([])
            rows = 0
        batches[-1].append(set_id)
        rows += count
    return batches


def complete_partitions(partitions: Sequence[Partition], tallies: dict[str, Tally]) -> list[str]:
    """The keys of the partitions with rows and nothing missing: those to publish."""
    return [p.key for p in partitions if p.key in tallies and tallies[p.key].missing == 0]


def partition_outcomes(
    partitions: Sequence[Partition],
    tallies: dict[str, Tally],
    counted: dict[str, PartitionOutcome],
) -> list[PartitionOutcome]:
    """Every partition's outcome: empty (no source row), published with its counts, or
    held back with what is missing."""
    outcomes = []
    for partition in partitions:
        key = partition.key
        if key not in tallies:
            outcomes.append(PartitionOutcome(key, published=False, empty=True))
        elif key in counted:
            outcomes.append(counted[key])
        else:
            outcomes.append(PartitionOutcome(key, published=False, missing=tallies[key].missing))
    return outcomes


_IN_SETS = in_list("set_id", "$set_ids")
"""Rows of the partitions in the list parameter ``$set_ids``."""


def _replace_summary(
    conn: duckdb.DuckDBPyConnection, tables: Tables, set_ids: Sequence[str]
) -> None:
    """The partitions' summary rows, from their rows just published (not the whole table)."""
    params = {"set_ids": list(set_ids)}
    conn.execute(f"DELETE FROM {tables.summary} WHERE {_IN_SETS}", params)
    own_rows = f"(SELECT * FROM {tables.published} WHERE {_IN_SETS})"
    conn.execute(f"INSERT INTO {tables.summary} {summary_rows_sql(own_rows)}", params)


def insert_sql(tables: Tables, *, dialect: Dialect = "duckdb", run_rows: str = RUN_ROWS) -> str:
    """``INSERT`` of the published rows of the partitions in the list parameter ``set_ids``
    from ``run_rows`` and the cache (parameter ``run_id``; valid in ``dialect``)."""
    serving = ", ".join(f"'{op}'" for op in sorted(SERVING_OPERATORS))
    run_id = placeholder("run_id", dialect)
    return f"""
        INSERT INTO {tables.published}
        SELECT r.set_id, r.mobile_raw, r.mobile,
               r.valid AND NOT coalesce({_REJECTED}, false) AS valid,
               CASE WHEN {_REJECTED} THEN '{PROVIDER_REJECTED}' ELSE r.invalid_reason END,
               c.status_code, c.status, c.operator, r.prefix_operator,
               CASE WHEN c.operator IS NULL OR r.network_operator NOT IN ({serving}) THEN NULL
                    ELSE c.operator <> r.network_operator END AS ported,
               c.order_number, c.checked_at,
               CASE WHEN NOT r.valid THEN 'invalid'
                    WHEN c.run_id = {run_id} THEN 'provider' ELSE 'cache' END AS source,
               {run_id}
        FROM {run_rows} r
        LEFT JOIN {tables.cache} c ON r.valid AND c.mobile = r.mobile
        WHERE {in_list_param("r.set_id", "set_ids", dialect)}
    """


def counts_sql(tables: Tables, *, dialect: Dialect = "duckdb") -> str:
    """``SELECT`` of the published partitions' counts in the list parameter ``set_ids``:
    ``set_id``, invalid, from cache, from provider, ported; in DuckDB also the histograms
    of status and operator (PostgreSQL has no ``histogram``). One pass, no ``DISTINCT``:
    the distinct counts are the :class:`Tally`'s."""
    histograms = (
        """,
               histogram(coalesce(status, 'none')) FILTER (WHERE valid),
               histogram(coalesce(operator, 'none')) FILTER (WHERE valid)"""
        if dialect == "duckdb"
        else ""
    )
    return f"""
        SELECT set_id, count(*) FILTER (WHERE NOT valid),
               count(*) FILTER (WHERE source = 'cache'),
               count(*) FILTER (WHERE source = 'provider'),
               count(*) FILTER (WHERE ported){histograms}
        FROM {tables.published} WHERE {in_list_param("set_id", "set_ids", dialect)}
        GROUP BY set_id
        """


def charges_sql(tables: Tables, *, dialect: Dialect = "duckdb") -> str:
    """``SELECT set_id, billed, possibly_billed, cost`` of the run ``run_id``'s audit rows
    charged to the partitions in the list parameter ``set_ids``.

    The cost is a ``DECIMAL(38, 6)`` in both databases (DuckDB's ``sum`` of prices is one;
    PostgreSQL's is a ``NUMERIC`` of the prices' scale, so a set without a billed call
    would give ``0`` rather than ``0.000000`` without the cast).
    """
    cost = "coalesce(sum(unit_price) FILTER (WHERE billed), 0)"
    if dialect == "postgres":
        cost = f"CAST({cost} AS {COST})"
    run_id = placeholder("run_id", dialect)
    in_sets = in_list_param("set_id", "set_ids", dialect)
    return f"""
            SELECT set_id, count(*) FILTER (WHERE billed), count(*) FILTER (WHERE possibly_billed),
                   {cost}
            FROM {tables.audit} WHERE run_id = {run_id} AND {in_sets}
            GROUP BY set_id
            """


def charges_by_set(rows: Sequence[Sequence[Any]]) -> dict[str, tuple[int, int, Decimal]]:
    """The rows of :func:`charges_sql` by set id."""
    return {
        str(set_id): (int(billed), int(possibly), Decimal(cost))
        for set_id, billed, possibly, cost in rows
    }


def _counts(
    conn: duckdb.DuckDBPyConnection,
    tables: Tables,
    set_ids: Sequence[str],
    run_id: str,
    tallies: dict[str, Tally],
) -> dict[str, PartitionOutcome]:
    """The published partitions' counts and charges, by set id (one pass per table)."""
    if not set_ids:
        return {}
    params: dict[str, Any] = {"set_ids": list(set_ids)}
    rows = conn.execute(counts_sql(tables), params).fetchall()
    charges = charges_by_set(
        conn.execute(charges_sql(tables), params | {"run_id": run_id}).fetchall()
    )
    return {
        str(row[0]): published_outcome(
            tallies[str(row[0])],
            row,
            _histogram(row[5]),
            _histogram(row[6]),
            charges.get(str(row[0])),
        )
        for row in rows
    }


def published_outcome(
    tally: Tally,
    counts: Sequence[Any],
    by_status: dict[str, int],
    by_operator: dict[str, int],
    charges: tuple[int, int, Decimal] | None,
) -> PartitionOutcome:
    """A published partition's outcome from its tally, its counts (``set_id``, invalid,
    from cache, from provider, ported), histograms and charges (billed, possibly billed,
    cost; ``None`` when the run has no audit row for it)."""
    billed, possibly_billed, cost = charges or (0, 0, Decimal(0))
    return PartitionOutcome(
        set_id=str(counts[0]),
        published=True,
        rows=tally.rows,
        numbers=tally.numbers,
        sent=tally.sent,
        invalid=int(counts[1]),
        from_cache=int(counts[2]),
        from_provider=int(counts[3]),
        ported=int(counts[4]),
        by_status=by_status,
        by_operator=by_operator,
        billed=billed,
        possibly_billed=possibly_billed,
        cost=cost,
    )


def _histogram(value: dict[str, int] | None) -> dict[str, int]:
    """A DuckDB ``histogram`` (a MAP, ``None`` when no row qualified), sorted by key."""
    return {str(k): int(v) for k, v in sorted((value or {}).items())}
