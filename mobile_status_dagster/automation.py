"""The schedule that re-enriches partitions whose numbers went stale."""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import dagster as dg
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.freshness import Freshness
from mobile_status_dagster.resources import closing_connect
from mobile_status_dagster.store.audit_checks import published_keys
from mobile_status_dagster.store.source import Partition, SourceTable
from mobile_status_dagster.store.summaries import stale_partitions

STALE_SCHEDULE = "mobile_status_refresh_stale"


def build_stale_refresh_schedule(
    enrichment: dg.AssetsDefinition,
    source: SourceTable,
    partitions_def: dg.PartitionsDefinition,
    freshness: Freshness,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
    *,
    cron_schedule: str = "0 3 * * *",
) -> dg.ScheduleDefinition:
    """A daily schedule requesting one run per partition that holds stale numbers.

    Stale: a valid number whose billed answer is older than its freshness, or that has
    no answer yet. Only those partitions run, and in them only those numbers are paid
    for. Stopped by default: turn it on in the UI (it spends money).
    """

    @dg.schedule(
        name=STALE_SCHEDULE,
        cron_schedule=cron_schedule,
        target=dg.AssetSelection.assets(enrichment),
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Re-enrich the partitions whose numbers went stale (or have none yet).",
    )
    def refresh_stale(
        context: dg.ScheduleEvaluationContext, duckdb: DuckDBResource
    ) -> dg.SkipReason | list[dg.RunRequest]:
        now = context.scheduled_execution_time or datetime.now(UTC)
        with closing_connect(duckdb)() as conn:
            if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
                assert partitions_def.name is not None
                candidates = list(context.instance.get_dynamic_partitions(partitions_def.name))
            else:
                candidates = published_keys(conn)
            keys = stale_partitions(
                conn, source, to_partitions(candidates), freshness=freshness, now=now
            )
        if not keys:
            return dg.SkipReason("no partition has stale numbers")
        day = now.strftime("%Y-%m-%d")
        return [dg.RunRequest(partition_key=key, run_key=f"{key}@{day}") for key in keys]

    return refresh_stale
