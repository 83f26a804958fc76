"""The default definitions, loaded by ``workspace.yaml`` (``dagster dev`` from the repo root).

Settings come from the environment (see :mod:`mobile_status_dagster.integration.environment`); a
malformed value fails the load with a message naming the variable.
"""

from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import (
    DUCKDB_RESOURCE_KEY,
    POSTGRES_RESOURCE_KEY,
    build_mobile_status_defs,
)
from mobile_status_dagster.integration.resources import (
    MobileStatusResource,
    PostgresStoreResource,
)

__all__ = ["DUCKDB_RESOURCE_KEY", "POSTGRES_RESOURCE_KEY", "build_default_definitions", "defs"]


def store_resource_key(deployment: settings.DeploymentSettings) -> str:
    """The key of the store resource: ``mobile_status_store`` (PostgreSQL) or ``duckdb``."""
    return DUCKDB_RESOURCE_KEY if deployment.store is None else POSTGRES_RESOURCE_KEY


def default_resources(deployment: settings.DeploymentSettings) -> dict[str, Any]:
    """``mobile_status_api`` and the store (see :func:`store_resource_key`) from the
    deployment settings.

    The base URL, the token and a PostgreSQL store's URL stay ``EnvVar``s, resolved at
    run start, so no secret enters the definitions, the run storage or the UI: the
    PostgreSQL store is ``$MOBILE_STATUS_STORE`` (``deployment.store`` only selects it).
    """
    api: dict[str, Any] = {
        "mobile_status_api": MobileStatusResource(
            base_url=dg.EnvVar(settings.BASE_URL),
            token=dg.EnvVar(settings.TOKEN),
            max_concurrency=deployment.max_concurrency,
            qps=deployment.qps,
            unit_price=deployment.unit_price,
            timeout_s=deployment.timeout_s,
        ),
    }
    if deployment.store is not None:
        store = PostgresStoreResource(
            url=dg.EnvVar(settings.STORE), db_schema=deployment.store_schema
        )
        return api | {POSTGRES_RESOURCE_KEY: store}
    return api | {
        DUCKDB_RESOURCE_KEY: DuckDBResource(
            database=deployment.db,
            connection_config=(
                {"memory_limit": deployment.duckdb_memory_limit}
                if deployment.duckdb_memory_limit
                else {}
            ),
        ),
    }


def build_default_definitions(deployment: settings.DeploymentSettings) -> dg.Definitions:
    """The library's assets over ``number_sets`` with resources from ``deployment``."""
    return dg.Definitions.merge(
        build_mobile_status_defs(duckdb_resource_key=store_resource_key(deployment)),
        dg.Definitions(resources=default_resources(deployment)),
    )


defs = build_default_definitions(settings.DeploymentSettings.from_env())
