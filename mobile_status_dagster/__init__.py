"""Dagster integration for a paid mobile-number status API.

The Dagster-facing names are imported lazily, so the Dagster-free core
(``numbers``, ``client``, ``store``, ``engine``) loads without importing Dagster.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mobile_status_dagster.assets import (
        MobileStatusRunConfig,
        build_mobile_status_assets,
        build_mobile_status_defs,
    )
    from mobile_status_dagster.component import MobileStatusComponent
    from mobile_status_dagster.freshness import Freshness
    from mobile_status_dagster.names import MobileStatusNames
    from mobile_status_dagster.resources import MobileStatusResource
    from mobile_status_dagster.status import Status

_EXPORTS = {
    "MobileStatusResource": "mobile_status_dagster.resources",
    "MobileStatusRunConfig": "mobile_status_dagster.assets",
    "build_mobile_status_assets": "mobile_status_dagster.assets",
    "build_mobile_status_defs": "mobile_status_dagster.assets",
    "Freshness": "mobile_status_dagster.freshness",
    "MobileStatusComponent": "mobile_status_dagster.component",
    "MobileStatusNames": "mobile_status_dagster.names",
    "Status": "mobile_status_dagster.status",
}

__all__ = [
    "Freshness",
    "MobileStatusComponent",
    "MobileStatusNames",
    "MobileStatusResource",
    "MobileStatusRunConfig",
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
