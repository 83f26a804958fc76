"""One "machine" enriching sets through the PostgreSQL store: ``python -m tests.pg_worker``.

Arguments: the store URL, the simulator's base URL, a run id, the journal directory
(local to this "machine"), then the set ids. Exits 0 when every set was published.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.core.engine import EnrichmentJob, enrich
from mobile_status_dagster.core.store import Partition, SourceTable
from mobile_status_dagster.core.store.postgres import PostgresTarget
from mobile_status_dagster.core.store.postgres.store import PostgresStore
from mobile_status_dagster.simulator import DEMO_TOKEN

CONCURRENCY = 16


async def run(store_url: str, base_url: str, run_id: str, journal: Path, sets: list[str]) -> bool:
    """Enrich ``sets``; whether every one was published."""
    store = PostgresStore(PostgresTarget(store_url), journal)
    job = EnrichmentJob(
        source=SourceTable(), partitions=tuple(Partition(s) for s in sets), run_id=run_id
    )
    settings = ClientSettings(base_url=base_url, token=DEMO_TOKEN, max_concurrency=CONCURRENCY)
    async with AsyncMobileStatusClient(settings) as client:
        report = await enrich(job, client=client, store=store)
    return report.ok


if __name__ == "__main__":
    store_url, base_url, run_id, journal, *set_ids = sys.argv[1:]
    sys.exit(0 if asyncio.run(run(store_url, base_url, run_id, Path(journal), set_ids)) else 1)
