"""Asset checks on ``mobile_status``: coverage, audit reconciliation, no double billing.

In the run that materializes the asset, each check examines what that run changed: the
partitions it published and the answers it was paid for (so a check costs what the run
changed, not what the warehouse holds). Run on their own (the UI's "Execute" on a
check, or a run that published nothing), or with the run tag
``mobile_status/full_check: "true"``, they examine everything.
"""

from collections.abc import Callable, Sequence

import dagster as dg

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.audit_checks import CheckOutcome
from mobile_status_dagster.core.store.schema import AUDIT, Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable
from mobile_status_dagster.integration.store_access import StoreAccess, StoreReads, store_access

FULL_CHECK_TAG = "mobile_status/full_check"
"""Run tag: ``"true"`` makes the checks examine everything, not only the run's changes."""


def build_checks(
    asset: dg.AssetsDefinition,
    source: SourceTable,
    freshness: Freshness,
    to_partitions: Callable[[Sequence[str]], Sequence[Partition]],
    *,
    tables: Tables,
    duckdb_resource_key: str,
) -> list[dg.AssetChecksDefinition]:
    """The three checks: over what the run changed, or over everything (see the module)."""

    def store(context: dg.AssetCheckExecutionContext) -> StoreAccess:
        return store_access(context.resources, duckdb_resource_key)

    def scope(context: dg.AssetCheckExecutionContext, reads: StoreReads) -> str | None:
        """The run whose changes to examine, or ``None`` for everything."""
        if context.run.tags.get(FULL_CHECK_TAG, "").strip().lower() == "true":
            return None
        run_id = context.run.run_id
        return run_id if reads.set_ids_published_by(run_id, tables=tables) else None

    @dg.asset_check(
        asset=asset,
        name="coverage",
        required_resource_keys={duckdb_resource_key},
        description="Every valid number of each published partition has an answer.",
    )
    def coverage(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with store(context).reads() as reads:
            run_id = scope(context, reads)
            outcome = reads.coverage(source, to_partitions, tables=tables, run_id=run_id)
            return _result(outcome, run_id)

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
        with store(context).reads() as reads:
            run_id = scope(context, reads)
            outcome = reads.audit_reconciliation(tables=tables, run_id=run_id)
            return _result(outcome, run_id)

    @dg.asset_check(
        asset=asset,
        name="no_double_billing",
        required_resource_keys={duckdb_resource_key},
        description="No number was billed again while its previous answer was still fresh.",
    )
    def no_double_billing(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with store(context).reads() as reads:
            run_id = scope(context, reads)
            outcome = reads.no_double_billing(freshness, tables=tables, run_id=run_id)
            return _result(outcome, run_id)

    return [coverage, audit_reconciliation, no_double_billing]


def _result(outcome: CheckOutcome, run_id: str | None) -> dg.AssetCheckResult:
    metadata: dict[str, dg.RawMetadataValue] = {
        "mobile_status/problems": outcome.problems,
        "mobile_status/scope": "this run's changes" if run_id is not None else "everything",
    }
    metadata.update({f"mobile_status/{key}": value for key, value in outcome.detail.items()})
    if outcome.examples:
        metadata["mobile_status/examples"] = dg.MetadataValue.md(
            "\n".join(f"- {e}" for e in outcome.examples)
        )
    return dg.AssetCheckResult(
        passed=outcome.passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
    )
