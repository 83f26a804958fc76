"""The enrichment engine: plan → check → record → publish, without Dagster."""

from mobile_status_dagster.engine.enrich import (
    EnrichmentJob,
    EnrichmentReport,
    EnrichmentStopped,
    Progress,
    StoreWriteError,
    enrich,
    journal_dir_for,
    recover_journal,
)

__all__ = [
    "EnrichmentJob",
    "EnrichmentReport",
    "EnrichmentStopped",
    "Progress",
    "StoreWriteError",
    "enrich",
    "journal_dir_for",
    "recover_journal",
]
