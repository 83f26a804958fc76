"""Asset checks on ``mobile_status``: coverage, audit reconciliation, no double billing."""

from collections.abc import Callable, Sequence

import dagster as dg
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.freshness import Freshness
from mobile_status_dagster.resources import closing_connect
from mobile_status_dagster.store import audit_checks
from mobile_status_dagster.store.audit_checks import CheckOutcome
from mobile_status_dagster.store.source import Partition, SourceTable


def build_checks(
    asset: dg.AssetsDefinition,
    source: SourceTable,
    freshness: Freshness,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
) -> list[dg.AssetChecksDefinition]:
    """The three checks over every published partition (they read whole tables)."""

    @dg.asset_check(
        asset=asset,
        name="coverage",
        description="Every valid number of each published partition has an answer.",
    )
    def coverage(duckdb: DuckDBResource) -> dg.AssetCheckResult:
        with closing_connect(duckdb)() as conn:
            return _result(audit_checks.coverage(conn, source, to_partitions))

    @dg.asset_check(
        asset=asset,
        name="audit_reconciliation",
        description=(
            "Every billed answer's order number is a billed call in provider_calls, "
            "and billed order numbers are unique."
        ),
    )
    def audit_reconciliation(duckdb: DuckDBResource) -> dg.AssetCheckResult:
        with closing_connect(duckdb)() as conn:
            return _result(audit_checks.audit_reconciliation(conn))

    @dg.asset_check(
        asset=asset,
        name="no_double_billing",
        description="No number was billed again while its previous answer was still fresh.",
    )
    def no_double_billing(duckdb: DuckDBResource) -> dg.AssetCheckResult:
        with closing_connect(duckdb)() as conn:
            return _result(audit_checks.no_double_billing(conn, freshness))

    return [coverage, audit_reconciliation, no_double_billing]


def _result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    metadata: dict[str, dg.RawMetadataValue] = {"problems": outcome.problems}
    metadata.update(outcome.detail)
    if outcome.examples:
        metadata["examples"] = dg.MetadataValue.md("\n".join(f"- {e}" for e in outcome.examples))
    return dg.AssetCheckResult(
        passed=outcome.passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
    )
