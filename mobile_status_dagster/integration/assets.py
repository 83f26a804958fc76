"""The ``mobile_status`` asset factory: point the library at your table and columns."""

import asyncio
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack, cast

import dagster as dg
from pydantic import Field

from mobile_status_dagster.core.engine import (
    EnrichmentJob,
    EnrichmentReport,
    Progress,
    enrich,
)
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.schema import AUDIT, DEFAULT_SOURCE, PUBLISHED
from mobile_status_dagster.core.store.source import Partition, SourceTable
from mobile_status_dagster.integration.automation import (
    build_automation_sensor,
    build_stale_refresh_schedule,
)
from mobile_status_dagster.integration.checks import build_checks
from mobile_status_dagster.integration.derived import build_reporting_assets
from mobile_status_dagster.integration.metadata import (
    failure_metadata,
    partition_metadata,
    published_column_schema,
)
from mobile_status_dagster.integration.names import MobileStatusNames
from mobile_status_dagster.integration.resources import MobileStatusResource, resource_of
from mobile_status_dagster.integration.sensors import build_new_sets_sensor
from mobile_status_dagster.integration.store_access import StoreAccess, store_access

DEFAULT_NAMES = MobileStatusNames()
PROVIDER_POOL = DEFAULT_NAMES.pool
DEFAULT_PARTITIONS_NAME = DEFAULT_NAMES.partitions
DUCKDB_RESOURCE_KEY = "duckdb"
"""The default store key, holding a DuckDB file's resource."""
POSTGRES_RESOURCE_KEY = "mobile_status_store"
"""The store key the default definitions and the component use for a PostgreSQL store."""
PROVIDER_KIND = "ip138"
"""The kind tag of the provider-calling asset (the vendor of the status API)."""

MobileStatusPartitions = dg.DynamicPartitionsDefinition | dg.TimeWindowPartitionsDefinition


class MobileStatusRunConfig(dg.Config):
    """Run configuration of ``mobile_status``."""

    force_refresh: bool = Field(
        default=False,
        description="Ask the provider again for every number, even those fresh in the cache.",
    )
    max_billed: int | None = Field(
        default=None,
        description="Budget for this run (overrides the resource's max_billed_per_run).",
    )


@dataclass(frozen=True)
class MobileStatusAssets:
    """What :func:`build_mobile_status_defs` built, for callers who need the parts."""

    definitions: dg.Definitions
    enrichment: dg.AssetsDefinition
    reporting: tuple[dg.AssetsDefinition, ...]
    checks: tuple[dg.AssetChecksDefinition, ...]
    partitions_def: MobileStatusPartitions
    source: SourceTable
    names: MobileStatusNames = DEFAULT_NAMES
    api_resource_key: str = DEFAULT_NAMES.api_resource_key
    duckdb_resource_key: str = DUCKDB_RESOURCE_KEY


class FactoryOptions(TypedDict, total=False):
    """The arguments of :func:`build_mobile_status_assets`, for :func:`build_mobile_status_defs`."""

    source_table: str
    set_column: str | None
    mobile_column: str
    time_column: str | None
    partitions_def: MobileStatusPartitions | None
    freshness: Freshness | None
    max_partitions_per_run: int | None
    key_prefix: str | Sequence[str] | None
    pool: str | None
    group_name: str | None
    api_resource_key: str | None
    duckdb_resource_key: str
    new_sets_sensor: bool
    new_sets_interval_s: int
    automation_sensor: bool
    automation_interval_s: int
    refresh_cron: str


def build_mobile_status_defs(**options: Unpack[FactoryOptions]) -> dg.Definitions:
    """The definitions of :func:`build_mobile_status_assets` (same arguments)."""
    return build_mobile_status_assets(**options).definitions


def build_mobile_status_assets(
    *,
    source_table: str = DEFAULT_SOURCE,
    set_column: str | None = "set_id",
    mobile_column: str = "mobile",
    time_column: str | None = None,
    partitions_def: MobileStatusPartitions | None = None,
    freshness: Freshness | None = None,
    max_partitions_per_run: int | None = None,
    key_prefix: str | Sequence[str] | None = None,
    pool: str | None = None,
    group_name: str | None = None,
    api_resource_key: str | None = None,
    duckdb_resource_key: str = DUCKDB_RESOURCE_KEY,
    new_sets_sensor: bool = True,
    new_sets_interval_s: int = 60,
    automation_sensor: bool = True,
    automation_interval_s: int = 30,
    refresh_cron: str = "0 3 * * *",
) -> MobileStatusAssets:
    """Build the partitioned ``mobile_status`` asset over the user's table, and its companions.

    Args:
        source_table: table (or ``schema.table``) holding the numbers.
        set_column: column whose values are the partitions (one per set id).
        mobile_column: column holding the numbers, in any messy spelling.
        time_column: for time-window partitions instead of sets: the rows whose value
            falls in a partition's window form that partition (set ``set_column=None``).
        partitions_def: defaults to a ``DynamicPartitionsDefinition`` named
            ``mobile_status_sets`` (set partitions); pass a time-window definition
            together with ``time_column`` for daily drops.
        freshness: how long answers are served from the cache (default 30 days).
        max_partitions_per_run: backfills run as one run (one client, one rate limiter,
            de-duplicated across sets); this caps the partitions per run.
        key_prefix: keeps several instances (source tables, provider accounts) apart in
            one code location: asset keys go under it, and every other name (partitions,
            sensors, schedule, pool, the provider resource key, the tables) starts with
            it, joined by ``_``. ``None`` keeps the single-instance names.
        pool: Dagster concurrency pool of the provider-calling asset (default
            ``mobile_status_provider`` under the prefix); limit it
            (``dagster instance concurrency set mobile_status_provider 1``) so that
            concurrent runs do not multiply the provider's QPS.
        group_name: asset group (default ``mobile_status`` under the prefix).
        api_resource_key: key of the :class:`MobileStatusResource` (default
            ``mobile_status_api`` under the prefix).
        duckdb_resource_key: key of the store resource (default ``duckdb``, the name kept
            for compatibility; instances in one warehouse share it): a
            ``dagster_duckdb.DuckDBResource`` (a DuckDB file, the embedded default) or a
            :class:`~mobile_status_dagster.integration.resources.PostgresStoreResource`
            (a PostgreSQL database shared by runs in separate pods or machines). The
            source table is read from the same store
            (:mod:`~mobile_status_dagster.integration.store_access`).
        new_sets_sensor: include the sensor that adds a partition per new set id.
        new_sets_interval_s: how often that sensor looks for new set ids.
        automation_sensor: include the automation condition sensor (running by default)
            that rebuilds the summary and the charges after enrichment. It targets only
            those derived assets, which cost nothing; the provider-calling asset is
            never automated.
        automation_interval_s: how often the automation sensor evaluates.
        refresh_cron: when the (stopped by default) schedule re-enriches stale partitions.

    Resources required: ``mobile_status_api`` (:class:`MobileStatusResource`) and
    ``duckdb`` (a ``dagster_duckdb.DuckDBResource`` or a ``PostgresStoreResource``),
    under the keys above.
    """
    names = MobileStatusNames.of(key_prefix)
    api_key = api_resource_key or names.api_resource_key
    tables = names.tables
    source = SourceTable(
        table=source_table,
        mobile_column=mobile_column,
        set_column=None if time_column else set_column,
        time_column=time_column,
    )
    if partitions_def is None:
        if time_column:
            raise dg.DagsterInvalidDefinitionError(
                "time_column needs a time-window partitions_def (e.g. DailyPartitionsDefinition)"
            )
        partitions_def = dg.DynamicPartitionsDefinition(name=names.partitions)
    if time_column and not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise dg.DagsterInvalidDefinitionError("time_column needs a time-window partitions_def")
    policy = (
        dg.BackfillPolicy.single_run()
        if max_partitions_per_run is None
        else dg.BackfillPolicy.multi_run(max_partitions_per_run)
    )
    freshness = freshness or Freshness()
    resolved_partitions: MobileStatusPartitions = partitions_def
    group = group_name or names.group

    with warnings.catch_warnings():
        # BackfillPolicy is marked beta; the warning says nothing actionable to users.
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.asset(
            key=names.enrichment,
            partitions_def=partitions_def,
            backfill_policy=policy,
            pool=pool or names.pool,
            group_name=group,
            kinds={"duckdb", PROVIDER_KIND},
            required_resource_keys={api_key, duckdb_resource_key},
            # The data lives in DuckDB; the output only marks the partitions materialized
            # (each with its own metadata) and lets downstream steps run.
            dagster_type=cast(dg.DagsterType, dg.Nothing),
            metadata={
                "dagster/table_name": tables.name(PUBLISHED),
                "dagster/column_schema": published_column_schema(),
            },
            description=(
                f"Status and serving operator of every number in {source_table!r}, per partition, "
                f"in the DuckDB table {tables.name(PUBLISHED)!r}. Only numbers that are new or "
                f"stale are paid for; every call is audited in {tables.name(AUDIT)!r}."
            ),
        )
        def mobile_status(
            context: dg.AssetExecutionContext, config: MobileStatusRunConfig
        ) -> Iterator[dg.Output[None] | dg.AssetMaterialization]:
            api = resource_of(context.resources, api_key, MobileStatusResource)
            store = store_access(context.resources, duckdb_resource_key)
            partitions = _partitions(context.partition_keys, resolved_partitions)
            job = EnrichmentJob(
                source=source,
                partitions=partitions,
                run_id=context.run.run_id,
                freshness=freshness,
                force_refresh=config.force_refresh,
                unit_price=api.price(),
                currency=api.currency,
                max_billed=(
                    config.max_billed if config.max_billed is not None else api.max_billed_per_run
                ),
                tables=tables,
            )
            report = asyncio.run(_run(context, job, api, store))
            if report.ok:
                for outcome in report.outcomes:
                    context.add_asset_metadata(
                        partition_metadata(outcome, report), partition_key=outcome.set_id
                    )
                yield dg.Output(None)
                return
            # A failed step has no output: record the partitions that were published.
            for outcome in report.outcomes:
                if outcome.published:
                    yield dg.AssetMaterialization(
                        asset_key=context.asset_key,
                        partition=outcome.set_id,
                        metadata=partition_metadata(outcome, report),
                    )
            raise dg.Failure(description=report.stop_message(), metadata=failure_metadata(report))

    def to_partitions(keys: Sequence[str]) -> tuple[Partition, ...]:
        return _partitions(keys, resolved_partitions)

    reporting = tuple(
        build_reporting_assets(
            mobile_status, names, group_name=group, duckdb_resource_key=duckdb_resource_key
        )
    )
    checks = tuple(
        build_checks(
            mobile_status,
            source,
            freshness,
            to_partitions,
            tables=tables,
            duckdb_resource_key=duckdb_resource_key,
        )
    )
    sensors: list[dg.SensorDefinition] = []
    if new_sets_sensor and isinstance(resolved_partitions, dg.DynamicPartitionsDefinition):
        sensors.append(
            build_new_sets_sensor(
                source,
                resolved_partitions,
                name=names.new_sets_sensor,
                duckdb_resource_key=duckdb_resource_key,
                minimum_interval_seconds=new_sets_interval_s,
            )
        )
    if automation_sensor:
        sensors.append(
            build_automation_sensor(
                reporting,
                name=names.automation_sensor,
                minimum_interval_seconds=automation_interval_s,
            )
        )
    schedule = build_stale_refresh_schedule(
        mobile_status,
        source,
        resolved_partitions,
        freshness,
        to_partitions,
        name=names.stale_schedule,
        tables=tables,
        duckdb_resource_key=duckdb_resource_key,
        cron_schedule=refresh_cron,
    )
    definitions = dg.Definitions(
        assets=[mobile_status, *reporting],
        asset_checks=checks,
        sensors=sensors,
        schedules=[schedule],
    )
    return MobileStatusAssets(
        definitions,
        mobile_status,
        reporting,
        checks,
        resolved_partitions,
        source,
        names,
        api_key,
        duckdb_resource_key,
    )


async def _run(
    context: dg.AssetExecutionContext,
    job: EnrichmentJob,
    api: MobileStatusResource,
    store: StoreAccess,
) -> EnrichmentReport:
    def progress(p: Progress) -> None:
        context.log.info(
            f"checked {p.done}/{p.total} numbers, {p.calls_per_s:.0f} calls/s, "
            f"{p.billed} billed so far"
        )

    context.log.info(
        f"enriching {len(job.partitions)} partition(s) of {job.source.table!r}: "
        f"{', '.join(p.key for p in job.partitions[:5])}{' …' if len(job.partitions) > 5 else ''}"
    )
    async with api.get_client() as client:
        report = await enrich(
            job,
            client=client,
            store=store.state_store(job.tables),
            progress=progress,
        )
    for warning in report.warnings:  # e.g. a journal segment moved to quarantine
        context.log.warning(warning)
    context.log.info(
        f"planned {report.plan.to_send} number(s) to send; sent {report.sent}, "
        f"billed {report.billed} ({report.cost} {report.currency}), "
        f"{report.calls_per_s:.0f} calls/s"
    )
    return report


def _partitions(
    keys: Sequence[str], partitions_def: MobileStatusPartitions
) -> tuple[Partition, ...]:
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        windows = [partitions_def.time_window_for_partition_key(k) for k in keys]
        return tuple(Partition(k, w.start, w.end) for k, w in zip(keys, windows, strict=True))
    return tuple(Partition(k) for k in keys)
