"""Dagster resources: the provider API, the PostgreSQL store, and DuckDB connections that
always close."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, Literal, TypeVar

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import ConfigDict, Field, field_serializer

from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.core.client import settings as client_rules
from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.money import DEFAULT_CURRENCY, DEFAULT_UNIT_PRICE, parse_price
from mobile_status_dagster.core.store.connection import Connect, file_connect
from mobile_status_dagster.core.store.postgres.connection import PostgresTarget

MASKED = "********"
"""How the token is shown wherever the resource prints or serializes itself."""

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


class LiteralStoreURLWarning(LiteralTokenWarning):
    """The store URL, with its password, was given as a literal string (see the token's)."""


LITERAL_STORE_URL_ADVICE = (
    "PostgresStoreResource got a URL with a password as a literal string; Dagster stores "
    "resource configuration in its run storage, so pass dg.EnvVar('MOBILE_STATUS_STORE') "
    "instead (or leave the password out of the URL and set PGPASSWORD)"
)


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

    # A value pydantic refuses (e.g. a token pasted into max_concurrency) is not quoted.
    model_config = ConfigDict(hide_input_in_errors=True)

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

    # The token is masked wherever a user could print, log or serialize the resource:
    # ``repr``, ``str``, f-strings and ``format`` (pydantic builds all of them from
    # ``__repr_args__``), ``model_dump()`` and ``model_dump_json()`` (the serializer).
    # ``dict(resource)``, ``iter(resource)`` and ``vars(resource)`` keep the real token:
    # Dagster builds the run's resource configuration from them
    # (``Config._get_non_default_public_field_values`` calls ``dict(self)``, and
    # ``__init__`` / ``separate_resource_params`` read ``self.__dict__``), so masking
    # them would hand the run a masked token and fail it with 4001.

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """pydantic's ``repr``/``str`` fields, with the token masked and the URL redacted."""
        for name, value in super().__repr_args__():
            if name == "token":
                yield name, MASKED
            elif name == "base_url":
                yield name, _shown_url(value)
            else:
                yield name, value

    @field_serializer("token")
    def _masked_token(self, token: str) -> str:
        """``model_dump()`` / ``model_dump_json()`` never carry the token."""
        return MASKED

    @field_serializer("base_url")
    def _redacted_base_url(self, base_url: str) -> str:
        """Nor credentials in the URL (refused at run start, but not yet at construction)."""
        return _shown_url(base_url)


def _shown_url(base_url: str) -> str:
    """``base_url`` without credentials; an ``EnvVar`` as itself (its name, never resolved)."""
    return base_url if isinstance(base_url, dg.EnvVar) else client_rules.redacted_url(base_url)


class PostgresStoreResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """A PostgreSQL database as the state store: cache, audit and published rows.

    For deployments whose runs live in separate pods or machines (Kubernetes, ECS,
    Docker run launchers), where no local DuckDB file is shared. Put it under the
    factory's store key (``duckdb_resource_key``, default ``duckdb``) instead of a
    ``DuckDBResource``; the source table is then read from the same database. Keep the
    URL in an environment variable: it holds the password. Dagster shows and stores an
    ``EnvVar``'s name, never its value; the resource's ``repr``, ``str`` and
    ``model_dump`` mask the password of a literal URL (a ``LiteralStoreURLWarning``
    says Dagster's run storage keeps it).

    Examples:
        .. code-block:: python

            import dagster as dg
            from mobile_status_dagster import (
                MobileStatusResource,
                PostgresStoreResource,
                build_mobile_status_defs,
            )

            defs = dg.Definitions.merge(
                build_mobile_status_defs(duckdb_resource_key="mobile_status_store"),
                dg.Definitions(
                    resources={
                        "mobile_status_api": MobileStatusResource(
                            base_url=dg.EnvVar("MOBILE_STATUS_BASE_URL"),
                            token=dg.EnvVar("MOBILE_STATUS_TOKEN"),
                        ),
                        "mobile_status_store": PostgresStoreResource(
                            url=dg.EnvVar("MOBILE_STATUS_STORE"),
                        ),
                    }
                ),
            )
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    url: str = Field(
        description=(
            "postgresql://user[:password]@host[:port]/dbname (libpq's URI). "
            "Use dg.EnvVar('MOBILE_STATUS_STORE')."
        )
    )
    db_schema: str | None = Field(
        default=None,
        description=(
            "Schema of the library's tables (and of the default source table); "
            "default: the database's search_path."
        ),
    )

    def __init__(self, **data: Any) -> None:
        url = data.get("url")
        if (
            isinstance(url, str)
            and not isinstance(url, dg.EnvVar)
            and _url_password(url)
            and not _built_by_dagster()
        ):
            warnings.warn(LiteralStoreURLWarning(LITERAL_STORE_URL_ADVICE), stacklevel=2)
        super().__init__(**data)

    def target(self) -> PostgresTarget:
        """The store's database (ConfigurationError names a malformed URL, masked)."""
        return PostgresTarget(self.url, self.db_schema)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Fail at run start on a malformed URL, before the first provider call."""
        self.target()

    # Masked as MobileStatusResource masks its token (see there why not dict()/vars()).

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """pydantic's ``repr``/``str`` fields, with the URL's password masked."""
        for name, value in super().__repr_args__():
            yield name, (shown_store_url(value) if name == "url" else value)

    @field_serializer("url")
    def _masked_url(self, url: str) -> str:
        """``model_dump()`` / ``model_dump_json()`` never carry the password."""
        return shown_store_url(url)


def _url_password(url: str) -> bool:
    try:
        return bool(PostgresTarget(url).password)
    except (ConfigurationError, ValueError):
        return False


def shown_store_url(url: str) -> str:
    """``url`` with its password masked; an ``EnvVar`` as itself (its name, never resolved)."""
    if isinstance(url, dg.EnvVar):
        return url
    try:
        return PostgresTarget(url).shown
    except (ConfigurationError, ValueError):
        return MASKED


def closing_connect(resource: DuckDBResource) -> Connect:
    """Connections for ``resource``'s database that always close, even when the body raises.

    ``DuckDBResource.get_connection()`` leaves the connection open when its body
    raises, which keeps the file locked against other processes; this does not.
    It also waits out another process's lock.
    """
    config = {"custom_user_agent": "dagster", **resource.connection_config}
    return file_connect(resource.database, config=config)
