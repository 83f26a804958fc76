"""Dagster integration for a paid mobile-number status API.

The Dagster-facing names are imported lazily, so the Dagster-free core
(``numbers``, ``client``, ``store``, ``engine``) loads without importing Dagster.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mobile_status_dagster.core.freshness import Freshness
    from mobile_status_dagster.core.status import Status
    from mobile_status_dagster.integration.assets import (
        MobileStatusRunConfig,
        build_mobile_status_assets,
        build_mobile_status_defs,
    )
    from mobile_status_dagster.integration.component import MobileStatusComponent
    from mobile_status_dagster.integration.names import MobileStatusNames
    from mobile_status_dagster.integration.resources import (
        MobileStatusResource,
        PostgresStoreResource,
    )

_EXPORTS = {
    "MobileStatusResource": "mobile_status_dagster.integration.resources",
    "MobileStatusRunConfig": "mobile_status_dagster.integration.assets",
    "PostgresStoreResource": "mobile_status_dagster.integration.resources",
    "build_mobile_status_assets": "mobile_status_dagster.integration.assets",
    "build_mobile_status_defs": "mobile_status_dagster.integration.assets",
    "Freshness": "mobile_status_dagster.core.freshness",
    "MobileStatusComponent": "mobile_status_dagster.integration.component",
    "MobileStatusNames": "mobile_status_dagster.integration.names",
    "Status": "mobile_status_dagster.core.status",
}

__all__ = [
    "Freshness",
    "MobileStatusComponent",
    "MobileStatusNames",
    "MobileStatusResource",
    "MobileStatusRunConfig",
    "PostgresStoreResource",
    "Status",
    "build_mobile_status_assets",
    "build_mobile_status_defs",
]


def __dir__() -> list[str]:
    # dg finds components with dir(); the lazy names must be listed.
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mobile_status_dagster' has no attribute {name!r}")
