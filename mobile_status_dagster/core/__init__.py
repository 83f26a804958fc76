"""The core: number rules, the provider client, the DuckDB store and the enrichment engine.

Nothing here imports Dagster; a plain script can use it (see ``engine``). The names
below are the core's public API; they are imported on first use.

========================  ===========================================================
``numbers``               normalization, segment operators, masking
``status``                the provider's status codes
``freshness``             how long an answer is served from the cache
``errors``                every error the library raises, with its advice
``client``                the provider's HTTP contract: pacing, retries, budget
``store``                 the only module with SQL: plan, record, publish, reports
``engine``                plan → check → record → publish, the journal, the estimate
========================  ===========================================================
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mobile_status_dagster.core.client import (
        AsyncMobileStatusClient,
        ChargeBudget,
        CheckResult,
        ClientSettings,
        MobileStatusClient,
    )
    from mobile_status_dagster.core.engine import (
        CostEstimate,
        EnrichmentJob,
        EnrichmentReport,
        estimate_cost,
        journal_dir_for,
    )
    from mobile_status_dagster.core.errors import ConfigurationError, MobileStatusError
    from mobile_status_dagster.core.freshness import Freshness
    from mobile_status_dagster.core.numbers import NormalizedNumber, Operator, mask, normalize
    from mobile_status_dagster.core.status import Status
    from mobile_status_dagster.core.store import Partition, SourceTable, Tables, file_connect

_EXPORTS = {
    "AsyncMobileStatusClient": "client",
    "ChargeBudget": "client",
    "CheckResult": "client",
    "ClientSettings": "client",
    "MobileStatusClient": "client",
    "CostEstimate": "engine",
    "EnrichmentJob": "engine",
    "EnrichmentReport": "engine",
    "estimate_cost": "engine",
    "journal_dir_for": "engine",
    "ConfigurationError": "errors",
    "MobileStatusError": "errors",
    "Freshness": "freshness",
    "NormalizedNumber": "numbers",
    "Operator": "numbers",
    "mask": "numbers",
    "normalize": "numbers",
    "Status": "status",
    "Partition": "store",
    "SourceTable": "store",
    "Tables": "store",
    "file_connect": "store",
}

__all__ = [
    "AsyncMobileStatusClient",
    "ChargeBudget",
    "CheckResult",
    "ClientSettings",
    "ConfigurationError",
    "CostEstimate",
    "EnrichmentJob",
    "EnrichmentReport",
    "Freshness",
    "MobileStatusClient",
    "MobileStatusError",
    "NormalizedNumber",
    "Operator",
    "Partition",
    "SourceTable",
    "Status",
    "Tables",
    "estimate_cost",
    "file_connect",
    "journal_dir_for",
    "mask",
    "normalize",
]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
