"""Derived assets: the sorting summary and the reconciled charges.

The tables are kept current where they change (publishing replaces a partition's
summary rows, each journal fold adds its charges), so materializing these assets costs
what the tables hold, not what the warehouse holds: it reads them for the metadata.
``full_rebuild: true`` in the run config rebuilds them from the published rows and the
audit (after editing those by hand, say).
"""

import dagster as dg

from mobile_status_dagster.core.store.schema import AUDIT, CHARGES, SUMMARY, Tables
from mobile_status_dagster.integration.metadata import charges_metadata, summary_metadata
from mobile_status_dagster.integration.names import MobileStatusNames
from mobile_status_dagster.integration.store_access import store_access

REBUILD_AFTER_ENRICHMENT = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after enrichment")
"""When the derived assets rebuild: after any partition of ``mobile_status`` was published.

Not ``AutomationCondition.eager()``: eager waits while any upstream partition is
missing, and a set that was registered but never enriched would hold the summary back
forever.
"""


class DerivedTableConfig(dg.Config):
    """Run config of the summary and the charges assets."""

    full_rebuild: bool = False
    """Rebuild the table from every published row (the summary) or the whole audit (the
    charges) instead of reading it as publishing and folding keep it."""


def build_reporting_assets(
    enrichment: dg.AssetsDefinition,
    names: MobileStatusNames,
    *,
    group_name: str,
    duckdb_resource_key: str,
) -> list[dg.AssetsDefinition]:
    """``mobile_status_summary`` and ``mobile_status_charges``, materialized after enrichment."""
    tables: Tables = names.tables

    @dg.asset(
        key=names.summary,
        deps=[enrichment],
        group_name=group_name,
        kinds={"duckdb"},
        required_resource_keys={duckdb_resource_key},
        automation_condition=REBUILD_AFTER_ENRICHMENT,
        metadata={"dagster/table_name": tables.name(SUMMARY)},
        description=(
            "Per set: numbers by status × serving operator × ported — the keep/drop view."
        ),
    )
    def mobile_status_summary(
        context: dg.AssetExecutionContext, config: DerivedTableConfig
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        with store_access(context.resources, duckdb_resource_key).reads() as reads:
            reads.ensure_schema(tables)
            if config.full_rebuild:
                reads.rebuild_summary(tables=tables)
            rows = reads.row_count(tables.summary)
            per_set = reads.summary_by_set_and_status(tables=tables)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, **summary_metadata(per_set)}
        )

    @dg.asset(
        key=names.charges,
        deps=[enrichment],
        group_name=group_name,
        kinds={"duckdb"},
        required_resource_keys={duckdb_resource_key},
        automation_condition=REBUILD_AFTER_ENRICHMENT,
        metadata={"dagster/table_name": tables.name(CHARGES)},
        description=(
            f"Calls, billed calls and cost per day × set × run, from {tables.name(AUDIT)}."
        ),
    )
    def mobile_status_charges(
        context: dg.AssetExecutionContext, config: DerivedTableConfig
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        with store_access(context.resources, duckdb_resource_key).reads() as reads:
            reads.ensure_schema(tables)
            if config.full_rebuild:
                reads.rebuild_charges(tables=tables)
            rows = reads.row_count(tables.charges)
            totals = reads.charges_totals(tables=tables)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, **charges_metadata(totals)}
        )

    return [mobile_status_summary, mobile_status_charges]
