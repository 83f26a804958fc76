"""The default definitions, loaded by ``workspace.yaml`` (``dagster dev`` from the repo root).

Settings come from the environment (see :mod:`mobile_status_dagster.integration.environment`); a
malformed value fails the load with a message naming the variable.
"""

from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import build_mobile_status_defs
from mobile_status_dagster.integration.resources import MobileStatusResource


def default_resources(deployment: settings.DeploymentSettings) -> dict[str, Any]:
    """``mobile_status_api`` and ``duckdb`` from the deployment settings.

    The base URL and token stay ``EnvVar``s, resolved at run start, so the token
    never enters the definitions or the UI.
    """
    return {
        "mobile_status_api": MobileStatusResource(
            base_url=dg.EnvVar(settings.BASE_URL),
            token=dg.EnvVar(settings.TOKEN),
            max_concurrency=deployment.max_concurrency,
            qps=deployment.qps,
            unit_price=deployment.unit_price,
            timeout_s=deployment.timeout_s,
        ),
        "duckdb": DuckDBResource(
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
        build_mobile_status_defs(), dg.Definitions(resources=default_resources(deployment))
    )


defs = build_default_definitions(settings.DeploymentSettings.from_env())
