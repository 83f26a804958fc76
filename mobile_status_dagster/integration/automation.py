"""Automation: the sensor that rebuilds the derived assets, and the stale-refresh schedule.

Only what costs nothing runs by itself. The automation sensor targets the summary and
the charges (rebuilt from the store, no provider call) and runs by default; the schedule
that re-enriches stale partitions pays the provider, so it is stopped by default.
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import dagster as dg

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable
from mobile_status_dagster.integration.names import MobileStatusNames
from mobile_status_dagster.integration.store_access import store_access

STALE_SCHEDULE = MobileStatusNames().stale_schedule
AUTOMATION_SENSOR = MobileStatusNames().automation_sensor


def build_automation_sensor(
    derived: Sequence[dg.AssetsDefinition],
    *,
    name: str = AUTOMATION_SENSOR,
    minimum_interval_seconds: int = 30,
) -> dg.AutomationConditionSensorDefinition:
    """An automation condition sensor over ``derived`` only, running by default.

    Dagster's own ``default_automation_condition_sensor`` starts STOPPED in a new
    instance; this one starts running, and never targets an asset that pays the provider.
    """
    return dg.AutomationConditionSensorDefinition(
        name=name,
        target=dg.AssetSelection.assets(*derived),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_seconds,
        description=(
            "Rebuilds the summary and the charges after enrichment (no provider call). "
            "The provider-calling asset is never automated."
        ),
    )


def build_stale_refresh_schedule(
    enrichment: dg.AssetsDefinition,
    source: SourceTable,
    partitions_def: dg.PartitionsDefinition,
    freshness: Freshness,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
    *,
    tables: Tables,
    name: str = STALE_SCHEDULE,
    duckdb_resource_key: str = "duckdb",
    cron_schedule: str = "0 3 * * *",
) -> dg.ScheduleDefinition:
    """A daily schedule requesting one run per partition that holds stale numbers.

    Stale: a valid number whose billed answer is older than its freshness, or that has
    no answer yet. Only those partitions run, and in them only those numbers are paid
    for. Stopped by default: turn it on in the UI (it spends money).
    """

    @dg.schedule(
        name=name,
        cron_schedule=cron_schedule,
        target=dg.AssetSelection.assets(enrichment),
        default_status=dg.DefaultScheduleStatus.STOPPED,
        required_resource_keys={duckdb_resource_key},
        description="Re-enrich the partitions whose numbers went stale (or have none yet).",
    )
    def refresh_stale(
        context: dg.ScheduleEvaluationContext, **_resources: object
    ) -> dg.SkipReason | list[dg.RunRequest]:
        # Direct invocation (schedule(context)) also passes the resources as keywords.
        now = context.scheduled_execution_time or datetime.now(UTC)
        with store_access(context.resources, duckdb_resource_key).reads() as reads:
            if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
                assert partitions_def.name is not None
                candidates = list(context.instance.get_dynamic_partitions(partitions_def.name))
            else:
                candidates = reads.published_set_ids(tables=tables)
            keys = reads.stale_partitions(
                source, to_partitions(candidates), tables=tables, freshness=freshness, now=now
            )
        if not keys:
            return dg.SkipReason("no partition has stale numbers")
        day = now.strftime("%Y-%m-%d")
        return [dg.RunRequest(partition_key=key, run_key=f"{key}@{day}") for key in keys]

    return refresh_stale
