"""Derived assets: the sorting summary and the reconciled charges."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.metadata import markdown_table
from mobile_status_dagster.resources import closing_connect
from mobile_status_dagster.store.summaries import CHARGES, SUMMARY, rebuild_charges, rebuild_summary


def build_reporting_assets(
    enrichment: dg.AssetsDefinition, group_name: str
) -> list[dg.AssetsDefinition]:
    """``mobile_status_summary`` and ``mobile_status_charges``, rebuilt after enrichment."""

    @dg.asset(
        name=SUMMARY,
        deps=[enrichment],
        group_name=group_name,
        kinds={"duckdb"},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            "Per set: numbers by status × serving operator × ported — the keep/drop view."
        ),
    )
    def mobile_status_summary(duckdb: DuckDBResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        with closing_connect(duckdb)() as conn:
            rows = rebuild_summary(conn)
            per_set = conn.execute(
                f"SELECT set_id, status, sum(numbers) FROM {SUMMARY} GROUP BY ALL ORDER BY ALL"
            ).fetchall()
        statuses = sorted({status for _, status, _ in per_set})
        counts = {(s, st): int(n) for s, st, n in per_set}
        sets = sorted({s for s, _, _ in per_set})
        table = markdown_table(
            ("set", *statuses), ((s, *(counts.get((s, st), 0) for st in statuses)) for s in sets)
        )
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, "by_set_and_status": dg.MetadataValue.md(table)}
        )

    @dg.asset(
        name=CHARGES,
        deps=[enrichment],
        group_name=group_name,
        kinds={"duckdb"},
        automation_condition=dg.AutomationCondition.eager(),
        description="Calls, billed calls and cost per day × set × run, from provider_calls.",
    )
    def mobile_status_charges(duckdb: DuckDBResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        with closing_connect(duckdb)() as conn:
            rows = rebuild_charges(conn)
            totals = conn.execute(
                f"SELECT currency, sum(calls), sum(billed_calls), sum(cost) FROM {CHARGES} "
                "GROUP BY ALL ORDER BY 1"
            ).fetchall()
        table = markdown_table(("currency", "calls", "billed", "cost"), totals)
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, "totals": dg.MetadataValue.md(table)}
        )

    return [mobile_status_summary, mobile_status_charges]
