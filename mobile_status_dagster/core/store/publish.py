"""Publishing partitions: each one replaced in one transaction, or not at all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from mobile_status_dagster.core.errors import NumberRejectedError
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import SERVING_OPERATORS
from mobile_status_dagster.core.store.connection import transaction
from mobile_status_dagster.core.store.plan import RUN_ROWS, fresh_sql, load_run_rows
from mobile_status_dagster.core.store.schema import Tables, summary_rows_sql
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
    ``now``. Each partition's rows in ``mobile_status``, and its rows in the summary, are
    replaced in one transaction.
    A partition without any source row is not published (``empty``): a mistyped set id
    must not wipe what was published before.
    """
    load_run_rows(conn, source, partitions)
    fresh = fresh_sql("c", freshness)
    params: dict[str, Any] = {"now": now, "run_id": run_id, "force": force_refresh}
    usable = f"(c.run_id = $run_id OR (NOT $force AND {fresh}))"
    present = {
        str(r[0]) for r in conn.execute(f"SELECT DISTINCT set_id FROM {RUN_ROWS}").fetchall()
    }
    outcomes = []
    for partition in partitions:
        if partition.key not in present:
            outcomes.append(PartitionOutcome(partition.key, published=False, empty=True))
            continue
        params["set_id"] = partition.key
        with transaction(conn):
            missing_row = conn.execute(
                f"""
                SELECT count(DISTINCT r.mobile) FROM {RUN_ROWS} r
                LEFT JOIN {tables.cache} c ON c.mobile = r.mobile
                WHERE r.set_id = $set_id AND r.valid AND (c.mobile IS NULL OR NOT {usable})
                """,
                params,
            ).fetchone()
            missing = int(missing_row[0]) if missing_row else 0
            if missing:
                outcomes.append(PartitionOutcome(partition.key, published=False, missing=missing))
                continue
            conn.execute(
                f"DELETE FROM {tables.published} WHERE set_id = $set_id", {"set_id": partition.key}
            )
            conn.execute(_insert_sql(tables), {"set_id": partition.key, "run_id": run_id})
            _replace_summary(conn, tables, partition.key)
        outcomes.append(_counts(conn, tables, partition.key, run_id))
    return outcomes


def _replace_summary(conn: duckdb.DuckDBPyConnection, tables: Tables, set_id: str) -> None:
    """The partition's summary rows, from its rows just published (not the whole table)."""
    params = {"set_id": set_id}
    conn.execute(f"DELETE FROM {tables.summary} WHERE set_id = $set_id", params)
    own_rows = f"(SELECT * FROM {tables.published} WHERE set_id = $set_id)"
    conn.execute(f"INSERT INTO {tables.summary} {summary_rows_sql(own_rows)}", params)


def _insert_sql(tables: Tables) -> str:
    rejected = f"c.status_code IS NULL AND c.provider_code = {NumberRejectedError.code}"
    serving = ", ".join(f"'{op}'" for op in sorted(SERVING_OPERATORS))
    return f"""
        INSERT INTO {tables.published}
        SELECT r.set_id, r.mobile_raw, r.mobile,
               r.valid AND NOT coalesce({rejected}, false) AS valid,
               CASE WHEN {rejected} THEN '{PROVIDER_REJECTED}' ELSE r.invalid_reason END,
               c.status_code, c.status, c.operator, r.prefix_operator,
               CASE WHEN c.operator IS NULL OR r.network_operator NOT IN ({serving}) THEN NULL
                    ELSE c.operator <> r.network_operator END AS ported,
               c.order_number, c.checked_at,
               CASE WHEN NOT r.valid THEN 'invalid'
                    WHEN c.run_id = $run_id THEN 'provider' ELSE 'cache' END AS source,
               $run_id
        FROM {RUN_ROWS} r
        LEFT JOIN {tables.cache} c ON r.valid AND c.mobile = r.mobile
        WHERE r.set_id = $set_id
    """


def _counts(
    conn: duckdb.DuckDBPyConnection, tables: Tables, set_id: str, run_id: str
) -> PartitionOutcome:
    params = {"set_id": set_id, "run_id": run_id}
    row = conn.execute(
        f"""
        SELECT count(*), count(*) FILTER (WHERE NOT valid),
               count(*) FILTER (WHERE source = 'cache'),
               count(*) FILTER (WHERE source = 'provider'),
               count(*) FILTER (WHERE ported),
               count(DISTINCT mobile) FILTER (WHERE valid),
               count(DISTINCT mobile) FILTER (WHERE source = 'provider')
        FROM {tables.published} WHERE set_id = $set_id
        """,
        {"set_id": set_id},
    ).fetchone()
    assert row is not None
    by_status = dict(
        conn.execute(
            f"SELECT coalesce(status, 'none'), count(*) FROM {tables.published} "
            "WHERE set_id = $set_id AND valid GROUP BY ALL ORDER BY 1",
            {"set_id": set_id},
        ).fetchall()
    )
    by_operator = dict(
        conn.execute(
            f"SELECT coalesce(operator, 'none'), count(*) FROM {tables.published} "
            "WHERE set_id = $set_id AND valid GROUP BY ALL ORDER BY 1",
            {"set_id": set_id},
        ).fetchall()
    )
    charges = conn.execute(
        f"""
        SELECT count(*) FILTER (WHERE billed), count(*) FILTER (WHERE possibly_billed),
               coalesce(sum(unit_price) FILTER (WHERE billed), 0)
        FROM {tables.audit} WHERE run_id = $run_id AND set_id = $set_id
        """,
        params,
    ).fetchone()
    assert charges is not None
    return PartitionOutcome(
        set_id=set_id,
        published=True,
        rows=int(row[0]),
        invalid=int(row[1]),
        from_cache=int(row[2]),
        from_provider=int(row[3]),
        ported=int(row[4]),
        numbers=int(row[5]),
        sent=int(row[6]),
        by_status={str(k): int(v) for k, v in by_status.items()},
        by_operator={str(k): int(v) for k, v in by_operator.items()},
        billed=int(charges[0]),
        possibly_billed=int(charges[1]),
        cost=Decimal(charges[2]),
    )
