"""The provider client: ``check`` one number or stream ``check_many``."""

from mobile_status_dagster.core.client.async_client import AsyncMobileStatusClient
from mobile_status_dagster.core.client.budget import ChargeBudget
from mobile_status_dagster.core.client.results import Attempt, CheckResult
from mobile_status_dagster.core.client.settings import ClientSettings, Secret, TokenPlacement
from mobile_status_dagster.core.client.sync_client import MobileStatusClient

__all__ = [
    "AsyncMobileStatusClient",
    "Attempt",
    "ChargeBudget",
    "CheckResult",
    "ClientSettings",
    "MobileStatusClient",
    "Secret",
    "TokenPlacement",
]
