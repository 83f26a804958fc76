"""The enrichment engine: plan → check → record → publish, without Dagster."""

from mobile_status_dagster.core.engine.enrich import (
    EnrichmentJob,
    EnrichmentReport,
    Progress,
    enrich,
    journal_dir_for,
    recover_journal,
)
from mobile_status_dagster.core.engine.estimate import CostEstimate, estimate_cost

__all__ = [
    "CostEstimate",
    "EnrichmentJob",
    "EnrichmentReport",
    "Progress",
    "enrich",
    "estimate_cost",
    "journal_dir_for",
    "recover_journal",
]
