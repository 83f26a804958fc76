"""Processes of the PostgreSQL scenarios (``bench/postgres.py``): ``python -m bench.store_worker
TASK ARGS``. Light imports (no Dagster), so a process's peak RSS and start-up are its task's.

- ``plan URL SET_ID``: plan one set against a PostgreSQL store (spool included), print JSON
  ``{"seconds", "to_send", "peak_rss_mb"}`` (the twin of ``bench.worker plan`` for DuckDB).
- ``enrich STORE TARGET BASE_URL RUN_ID JOURNAL CONCURRENCY SET_ID``: one engine run
  (``enrich``, no Dagster) of a set; ``STORE`` is ``duckdb`` (``TARGET`` a file, its journal
  beside it; ``JOURNAL`` ignored) or ``postgres`` (``TARGET`` a URL, the journal in
  ``JOURNAL``, local to this "machine"). Exits 0 when the set was published.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.worker import peak_rss_mb
from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.core.engine import EnrichmentJob, EnrichmentReport, enrich
from mobile_status_dagster.core.engine.enrich import journal_dir_for
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store import Partition, SourceTable, file_connect
from mobile_status_dagster.core.store.backend import StateStore
from mobile_status_dagster.core.store.duckdb_store import DuckDBStore
from mobile_status_dagster.core.store.postgres import PostgresTarget
from mobile_status_dagster.core.store.postgres import plan as pg_plan
from mobile_status_dagster.core.store.postgres.store import PostgresStore
from mobile_status_dagster.core.store.schema import DEFAULT_TABLES
from mobile_status_dagster.simulator import DEMO_TOKEN


def make_store(kind: str, target: str, journal: Path) -> StateStore:
    """A :class:`DuckDBStore` of the file ``target`` (journal beside it) or a
    :class:`PostgresStore` of the URL ``target`` (journal in ``journal``)."""
    if kind == "duckdb":
        return DuckDBStore(file_connect(target), journal_dir_for(target))
    if kind == "postgres":
        return PostgresStore(PostgresTarget(target), journal)
    raise ValueError(f"unknown store {kind!r}")


async def run_engine(
    store: StateStore, base_url: str, run_id: str, concurrency: int, *set_ids: str
) -> tuple[float, EnrichmentReport]:
    """One ``enrich`` of ``set_ids`` through ``store``: its seconds (the client is opened
    before the clock starts, as for the raw client) and its report."""
    job = EnrichmentJob(
        source=SourceTable(), partitions=tuple(Partition(s) for s in set_ids), run_id=run_id
    )
    settings = ClientSettings(base_url=base_url, token=DEMO_TOKEN, max_concurrency=concurrency)
    async with AsyncMobileStatusClient(settings) as client:
        started = time.perf_counter()
        report = await enrich(job, client=client, store=store)
        return time.perf_counter() - started, report


def plan(url: str, set_id: str) -> dict[str, float]:
    """Normalize, de-duplicate and plan one set against a PostgreSQL cache, spool included."""
    with tempfile.TemporaryDirectory(prefix="mobile-status-bench-plan-") as scratch:
        spool = Path(scratch) / "spool.parquet"
        with PostgresTarget(url).connect()() as conn:
            started = time.perf_counter()
            result = pg_plan.plan_run(
                conn,
                SourceTable(),
                [Partition(set_id)],
                tables=DEFAULT_TABLES,
                freshness=Freshness(),
                now=datetime.now(UTC),
                spool=spool,
            )
            seconds = time.perf_counter() - started
    return {"seconds": seconds, "to_send": result.to_send, "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str]) -> int:
    task, *args = argv
    if task == "plan":
        print(json.dumps(plan(*args)))
        return 0
    if task == "enrich":
        kind, target, base_url, run_id, journal, concurrency, set_id = args
        store = make_store(kind, target, Path(journal))
        _, report = asyncio.run(run_engine(store, base_url, run_id, int(concurrency), set_id))
        return 0 if report.ok else 1
    raise SystemExit(f"unknown task {task!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
