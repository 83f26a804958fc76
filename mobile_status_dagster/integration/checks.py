"""Asset checks on ``mobile_status``: coverage, audit reconciliation, no double billing."""

from collections.abc import Callable, Sequence

import dagster as dg
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store import audit_checks
from mobile_status_dagster.core.store.audit_checks import CheckOutcome
from mobile_status_dagster.core.store.schema import AUDIT, Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable
from mobile_status_dagster.integration.resources import closing_connect, resource_of


def build_checks(
    asset: dg.AssetsDefinition,
    source: SourceTable,
    freshness: Freshness,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
    *,
    tables: Tables,
    duckdb_resource_key: str,
) -> list[dg.AssetChecksDefinition]:
    """The three checks over every published partition (they read whole tables)."""

    def connect(context: dg.AssetCheckExecutionContext) -> DuckDBResource:
        return resource_of(context.resources, duckdb_resource_key, DuckDBResource)

    @dg.asset_check(
        asset=asset,
        name="coverage",
        required_resource_keys={duckdb_resource_key},
        description="Every valid number of each published partition has an answer.",
    )
    def coverage(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with closing_connect(connect(context))() as conn:
            return _result(audit_checks.coverage(conn, source, to_partitions, tables=tables))

    @dg.asset_check(
        asset=asset,
        name="audit_reconciliation",
        required_resource_keys={duckdb_resource_key},
        description=(
            f"Every billed answer's order number is a billed call in {tables.name(AUDIT)}, "
            "and billed order numbers are unique."
        ),
    )
    def audit_reconciliation(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with closing_connect(connect(context))() as conn:
            return _result(audit_checks.audit_reconciliation(conn, tables=tables))

    @dg.asset_check(
        asset=asset,
        name="no_double_billing",
        required_resource_keys={duckdb_resource_key},
        description="No number was billed again while its previous answer was still fresh.",
    )
    def no_double_billing(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with closing_connect(connect(context))() as conn:
            return _result(audit_checks.no_double_billing(conn, freshness, tables=tables))

    return [coverage, audit_reconciliation, no_double_billing]


def _result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    metadata: dict[str, dg.RawMetadataValue] = {"mobile_status/problems": outcome.problems}
    metadata.update({f"mobile_status/{key}": value for key, value in outcome.detail.items()})
    if outcome.examples:
        metadata["mobile_status/examples"] = dg.MetadataValue.md(
            "\n".join(f"- {e}" for e in outcome.examples)
        )
    return dg.AssetCheckResult(
        passed=outcome.passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
    )
