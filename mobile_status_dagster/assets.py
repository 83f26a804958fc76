"""The ``mobile_status`` asset factory: point the library at your table and columns."""

import asyncio
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack, cast

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mobile_status_dagster.automation import build_stale_refresh_schedule
from mobile_status_dagster.checks import build_checks
from mobile_status_dagster.engine import (
    EnrichmentJob,
    EnrichmentReport,
    Progress,
    enrich,
    journal_dir_for,
)
from mobile_status_dagster.freshness import Freshness
from mobile_status_dagster.metadata import partition_metadata, run_metadata
from mobile_status_dagster.reporting import build_reporting_assets
from mobile_status_dagster.resources import MobileStatusResource, closing_connect
from mobile_status_dagster.sensors import build_new_sets_sensor
from mobile_status_dagster.store.source import Partition, SourceTable

PROVIDER_POOL = "mobile_status_provider"
DEFAULT_PARTITIONS_NAME = "mobile_status_sets"

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


class FactoryOptions(TypedDict, total=False):
    """The arguments of :func:`build_mobile_status_assets`, for :func:`build_mobile_status_defs`."""

    source_table: str
    set_column: str | None
    mobile_column: str
    time_column: str | None
    partitions_def: MobileStatusPartitions | None
    freshness: Freshness | None
    max_partitions_per_run: int | None
    pool: str
    group_name: str
    new_sets_sensor: bool
    refresh_cron: str


def build_mobile_status_defs(**options: Unpack[FactoryOptions]) -> dg.Definitions:
    """The definitions of :func:`build_mobile_status_assets` (same arguments)."""
    return build_mobile_status_assets(**options).definitions


def build_mobile_status_assets(
    *,
    source_table: str = "number_sets",
    set_column: str | None = "set_id",
    mobile_column: str = "mobile",
    time_column: str | None = None,
    partitions_def: MobileStatusPartitions | None = None,
    freshness: Freshness | None = None,
    max_partitions_per_run: int | None = None,
    pool: str = PROVIDER_POOL,
    group_name: str = "mobile_status",
    new_sets_sensor: bool = True,
    refresh_cron: str = "0 3 * * *",
) -> MobileStatusAssets:
    """Build the partitioned ``mobile_status`` asset over the user's table.

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
        pool: Dagster concurrency pool of the provider-calling asset; limit it
            (``dagster instance concurrency set mobile_status_provider 1``) so that
            concurrent runs do not multiply the provider's QPS.
        group_name: asset group.
        new_sets_sensor: include the sensor that adds a partition per new set id.
        refresh_cron: when the (stopped by default) schedule re-enriches stale partitions.

    Resources required: ``mobile_status_api`` (:class:`MobileStatusResource`) and
    ``duckdb`` (``dagster_duckdb.DuckDBResource``).
    """
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
        partitions_def = dg.DynamicPartitionsDefinition(name=DEFAULT_PARTITIONS_NAME)
    if time_column and not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise dg.DagsterInvalidDefinitionError("time_column needs a time-window partitions_def")
    policy = (
        dg.BackfillPolicy.single_run()
        if max_partitions_per_run is None
        else dg.BackfillPolicy.multi_run(max_partitions_per_run)
    )
    freshness = freshness or Freshness()
    resolved_partitions: MobileStatusPartitions = partitions_def

    with warnings.catch_warnings():
        # BackfillPolicy is marked beta; the warning says nothing actionable to users.
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.asset(
            name="mobile_status",
            partitions_def=partitions_def,
            backfill_policy=policy,
            pool=pool,
            group_name=group_name,
            kinds={"duckdb"},
            # The data lives in DuckDB; the output only marks the partitions materialized
            # (each with its own metadata) and lets downstream steps run.
            dagster_type=cast(dg.DagsterType, dg.Nothing),
            description=(
                f"Status and serving operator of every number in {source_table!r}, per partition. "
                "Only numbers that are new or stale are paid for; every call is audited in "
                "provider_calls."
            ),
        )
        def mobile_status(
            context: dg.AssetExecutionContext,
            config: MobileStatusRunConfig,
            mobile_status_api: MobileStatusResource,
            duckdb: DuckDBResource,
        ) -> Iterator[dg.Output[None] | dg.AssetMaterialization]:
            partitions = _partitions(context.partition_keys, resolved_partitions)
            job = EnrichmentJob(
                source=source,
                partitions=partitions,
                run_id=context.run.run_id,
                freshness=freshness,
                force_refresh=config.force_refresh,
                unit_price=mobile_status_api.price(),
                currency=mobile_status_api.currency,
                max_billed=(
                    config.max_billed
                    if config.max_billed is not None
                    else mobile_status_api.max_billed_per_run
                ),
            )
            report = asyncio.run(_run(context, job, mobile_status_api, duckdb))
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
            raise dg.Failure(description=report.stop_message(), metadata=run_metadata(report))

    def to_partitions(keys: Sequence[str]) -> tuple[Partition, ...]:
        return _partitions(keys, resolved_partitions)

    sensors = []
    if new_sets_sensor and isinstance(resolved_partitions, dg.DynamicPartitionsDefinition):
        sensors.append(build_new_sets_sensor(source, resolved_partitions))
    reporting = tuple(build_reporting_assets(mobile_status, group_name))
    checks = tuple(build_checks(mobile_status, source, freshness, to_partitions))
    definitions = dg.Definitions(
        assets=[mobile_status, *reporting],
        asset_checks=checks,
        sensors=sensors,
        schedules=[
            build_stale_refresh_schedule(
                mobile_status,
                source,
                resolved_partitions,
                freshness,
                to_partitions,
                cron_schedule=refresh_cron,
            )
        ],
    )
    return MobileStatusAssets(
        definitions, mobile_status, reporting, checks, resolved_partitions, source
    )


async def _run(
    context: dg.AssetExecutionContext,
    job: EnrichmentJob,
    api: MobileStatusResource,
    duckdb: DuckDBResource,
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
            connect=closing_connect(duckdb),
            journal_dir=journal_dir_for(duckdb.database),
            progress=progress,
        )
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
