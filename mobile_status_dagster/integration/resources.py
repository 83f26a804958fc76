"""Dagster resources: the provider API, and DuckDB connections that always close."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.store.connection import Connect, file_connect

LITERAL_SECRET_ADVICE = (
    "MobileStatusResource got the token as a literal string; Dagster stores resource "  # noqa: S105
    "configuration in its run storage, so pass dg.EnvVar('MOBILE_STATUS_TOKEN') instead"
)


_Resource = TypeVar("_Resource")


def resource_of(resources: Any, key: str, kind: type[_Resource]) -> _Resource:
    """The resource under ``key`` in a context's ``resources``, checked to be a ``kind``."""
    value = getattr(resources, key)
    if not isinstance(value, kind):
        raise dg.DagsterInvalidDefinitionError(
            f"resource {key!r} must be a {kind.__name__}, got {type(value).__name__}"
        )
    return value


class LiteralTokenWarning(UserWarning):
    """The token was given as a literal string, which Dagster keeps in its run storage."""


class _Resolving(threading.local):
    active = False


_resolving = _Resolving()


class MobileStatusResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The mobile number status API (IP138 "mobile number online status query").

    One paid call per number; the resource hands the enrichment asset a client that
    pushes the provider as hard as these settings allow and no harder. Keep the token
    in an environment variable: Dagster shows and stores ``EnvVar`` names, never their
    values; a literal token is stored in its run storage (a ``LiteralTokenWarning`` says so).

    Examples:
        .. code-block:: python

            import dagster as dg
            from dagster_duckdb import DuckDBResource
            from mobile_status_dagster import MobileStatusResource, build_mobile_status_defs

            defs = dg.Definitions.merge(
                build_mobile_status_defs(),
                dg.Definitions(
                    resources={
                        "mobile_status_api": MobileStatusResource(
                            base_url=dg.EnvVar("MOBILE_STATUS_BASE_URL"),
                            token=dg.EnvVar("MOBILE_STATUS_TOKEN"),
                            unit_price="0.05",
                            max_concurrency=64,
                        ),
                        "duckdb": DuckDBResource(database="mobile_status.duckdb"),
                    }
                ),
            )
    """

    base_url: str = Field(
        description="The account's allocated provider domain, e.g. https://abc.example.com."
    )
    token: str = Field(
        description="The 32-character account token. Use dg.EnvVar('MOBILE_STATUS_TOKEN')."
    )
    token_placement: Literal["header", "query"] = Field(
        default="header",
        description="Send the token as a 'token' header (default) or a query parameter.",
    )
    timeout_s: float = Field(default=10.0, description="Seconds allowed for one attempt.")
    max_concurrency: int = Field(default=64, description="Requests in flight at once.")
    qps: float | None = Field(
        default=None, description="Calls per second at most (the account's QPS); None: no cap."
    )
    max_retries: int = Field(
        default=3, description="Retries after the first attempt for retryable failures."
    )
    unit_price: str = Field(
        default="0",
        description="Price of one billed call as an exact decimal string, e.g. '0.05'.",
    )
    currency: str = Field(default="CNY", description="Currency of unit_price.")
    max_billed_per_run: int | None = Field(
        default=None,
        description="Budget: a run stops before more calls than this could be billed.",
    )

    def __init__(self, **data: Any) -> None:
        token = data.get("token")
        if isinstance(token, str) and not isinstance(token, dg.EnvVar) and not _resolving.active:
            warnings.warn(LiteralTokenWarning(LITERAL_SECRET_ADVICE), stacklevel=2)
        super().__init__(**data)

    def _with_updated_values(self, values: Mapping[str, Any] | None) -> Any:
        # Dagster builds the run-time copy with the resolved (plain string) token.
        _resolving.active = True
        try:
            return super()._with_updated_values(values)
        finally:
            _resolving.active = False

    def client_settings(self) -> ClientSettings:
        """The validated client settings (ConfigurationError names a bad setting)."""
        return ClientSettings(
            base_url=self.base_url,
            token=self.token,
            token_placement=self.token_placement,
            timeout_s=self.timeout_s,
            max_concurrency=self.max_concurrency,
            qps=self.qps,
            max_retries=self.max_retries,
        )

    def price(self) -> Decimal:
        """``unit_price`` as an exact, non-negative decimal."""
        try:
            price = Decimal(self.unit_price)
        except InvalidOperation:
            raise ConfigurationError(
                "unit_price", f"{self.unit_price!r} is not a decimal number"
            ) from None
        if not price.is_finite() or price < 0:
            raise ConfigurationError("unit_price", "must be a finite number >= 0")
        return price

    def check_settings(self) -> None:
        """Check every setting before any call is made."""
        self.client_settings()
        self.price()
        if not self.currency.strip():
            raise ConfigurationError("currency", "is empty")
        if self.max_billed_per_run is not None and self.max_billed_per_run < 0:
            raise ConfigurationError("max_billed_per_run", "must be >= 0")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Fail at run start, naming the setting, before the first provider call."""
        self.check_settings()

    def get_client(self) -> AsyncMobileStatusClient:
        """A new async client; use it as ``async with resource.get_client() as client``."""
        return AsyncMobileStatusClient(self.client_settings())

    def __repr__(self) -> str:
        return f"MobileStatusResource(base_url={self.base_url!r}, token='********')"


def closing_connect(resource: DuckDBResource) -> Connect:
    """Connections for ``resource``'s database that always close, even when the body raises.

    ``DuckDBResource.get_connection()`` leaves the connection open when its body
    raises, which keeps the file locked against other processes; this does not.
    It also waits out another process's lock.
    """
    config = {"custom_user_agent": "dagster", **resource.connection_config}
    return file_connect(resource.database, config=config)
