"""Dagster resources: the provider API, and DuckDB connections that always close."""

from __future__ import annotations

import inspect
import warnings
from decimal import Decimal
from typing import Any, Literal, TypeVar

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.core.client import settings as client_rules
from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.money import DEFAULT_CURRENCY, DEFAULT_UNIT_PRICE, parse_price
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


def _field(setting: client_rules.NumberSetting) -> Any:
    """A pydantic field with the client setting's own default and description."""
    return Field(default=setting.default, description=setting.description)


class LiteralTokenWarning(UserWarning):
    """The token was given as a literal string, which Dagster keeps in its run storage."""


def _built_by_dagster() -> bool:
    """Whether the resource is being constructed by Dagster's own code.

    At run start Dagster builds a copy of the resource with every ``EnvVar`` resolved,
    so a token given as an ``EnvVar`` arrives there as a plain string: the warning is for
    the user's construction only. ``__init__``'s caller is two frames up from here.
    """
    frame = inspect.currentframe()
    caller = frame.f_back.f_back if frame is not None and frame.f_back is not None else None
    module = caller.f_globals.get("__name__", "") if caller is not None else ""
    return str(module).split(".", 1)[0] == "dagster"


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
        default=client_rules.DEFAULT_TOKEN_PLACEMENT,
        description="Send the token as a 'token' header (default) or a query parameter.",
    )
    timeout_s: float = _field(client_rules.TIMEOUT_S)
    max_concurrency: int = _field(client_rules.MAX_CONCURRENCY)
    qps: float | None = _field(client_rules.QPS)
    max_retries: int = _field(client_rules.MAX_RETRIES)
    unit_price: str = Field(
        default=DEFAULT_UNIT_PRICE,
        description="Price of one billed call as an exact decimal string, e.g. '0.05'.",
    )
    currency: str = Field(default=DEFAULT_CURRENCY, description="Currency of unit_price.")
    max_billed_per_run: int | None = Field(
        default=None,
        description="Budget: a run stops before more calls than this could be billed.",
    )

    def __init__(self, **data: Any) -> None:
        token = data.get("token")
        if isinstance(token, str) and not isinstance(token, dg.EnvVar) and not _built_by_dagster():
            warnings.warn(LiteralTokenWarning(LITERAL_SECRET_ADVICE), stacklevel=2)
        super().__init__(**data)

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
        return parse_price(self.unit_price)

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
