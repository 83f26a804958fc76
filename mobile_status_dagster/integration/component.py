"""``MobileStatusComponent``: one instance of the library, declared in a ``defs.yaml``.

Scaffold one in a ``dg`` project with::

    dg scaffold defs mobile_status_dagster.MobileStatusComponent phone_lists

Every option of :func:`~mobile_status_dagster.build_mobile_status_assets` and every
setting of :class:`~mobile_status_dagster.MobileStatusResource` can be set in the YAML.
Secrets stay out of Dagster's storage: a ``token`` (or ``base_url``, or a PostgreSQL
store's ``url``) written as ``"{{ env.MOBILE_STATUS_TOKEN }}"`` becomes
``dg.EnvVar("MOBILE_STATUS_TOKEN")``, which Dagster stores by name, never by value.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mobile_status_dagster.core.client import settings as client_rules
from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.freshness import DEFAULT_MAX_AGE, Freshness
from mobile_status_dagster.core.money import DEFAULT_CURRENCY, DEFAULT_UNIT_PRICE
from mobile_status_dagster.core.store.schema import DEFAULT_SOURCE
from mobile_status_dagster.integration.assets import (
    DUCKDB_RESOURCE_KEY,
    POSTGRES_RESOURCE_KEY,
    MobileStatusAssets,
    build_mobile_status_assets,
)
from mobile_status_dagster.integration.environment import BASE_URL, DEFAULT_DB, STORE, TOKEN
from mobile_status_dagster.integration.names import MobileStatusNames
from mobile_status_dagster.integration.resources import (
    MobileStatusResource,
    PostgresStoreResource,
)

# "{{ env.NAME }}" or "{{ env('NAME') }}", and nothing else in the string.
_ENV_TEMPLATE = re.compile(
    r"\{\{\s*env(?:\.(?P<attr>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\(\s*['\"](?P<call>[A-Za-z_][A-Za-z0-9_]*)['\"]\s*\))\s*\}\}"
)

TimeCadence = Literal["hourly", "daily", "weekly", "monthly"]
_TIME_PARTITIONS: dict[str, type[dg.TimeWindowPartitionsDefinition]] = {
    "hourly": dg.HourlyPartitionsDefinition,
    "daily": dg.DailyPartitionsDefinition,
    "weekly": dg.WeeklyPartitionsDefinition,
    "monthly": dg.MonthlyPartitionsDefinition,
}
_OFFSETS = frozenset({"minute_offset", "hour_offset", "day_offset"})
# Dagster's definitions take **kwargs, so an offset their cadence lacks would pass silently.
_OFFSETS_OF: dict[str, frozenset[str]] = {
    "hourly": frozenset({"minute_offset"}),
    "daily": frozenset({"minute_offset", "hour_offset"}),
    "weekly": _OFFSETS,
    "monthly": _OFFSETS,
}


# A number in the YAML may also be a "{{ … }}" template, rendered at load: `| str`.


class ProviderModel(dg.Model):
    """The provider account: the settings of :class:`MobileStatusResource`."""

    base_url: str = f"{{{{ env.{BASE_URL} }}}}"
    token: str = f"{{{{ env.{TOKEN} }}}}"
    token_placement: Literal["header", "query"] | str = client_rules.DEFAULT_TOKEN_PLACEMENT
    timeout_s: float | str = cast(float, client_rules.TIMEOUT_S.default)
    max_concurrency: int | str = cast(int, client_rules.MAX_CONCURRENCY.default)
    qps: float | str | None = client_rules.QPS.default
    max_retries: int | str = cast(int, client_rules.MAX_RETRIES.default)
    unit_price: str = DEFAULT_UNIT_PRICE
    currency: str = DEFAULT_CURRENCY
    max_billed_per_run: int | str | None = None


class PostgresModel(dg.Model):
    """A PostgreSQL database as the state store: the settings of :class:`PostgresStoreResource`."""

    url: str = f"{{{{ env.{STORE} }}}}"
    db_schema: str | None = None


class FreshnessModel(dg.Model):
    """How long answers are served from the cache, in days; overrides keyed by status label."""

    max_age_days: float | str = DEFAULT_MAX_AGE / timedelta(days=1)
    by_status_days: dict[str, float | str] = Field(default_factory=dict)


class TimePartitionsModel(dg.Model):
    """Time-window partitions over ``time_column`` instead of set partitions.

    The offsets are those of Dagster's partitions definitions: ``minute_offset`` (every
    cadence), ``hour_offset`` (daily, weekly, monthly), ``day_offset`` (weekly: 0 is
    Sunday; monthly: the day of the month).
    """

    cadence: TimeCadence = "daily"
    start_date: str
    end_date: str | None = None
    timezone: str | None = None
    fmt: str | None = None
    minute_offset: int | None = None
    hour_offset: int | None = None
    day_offset: int | None = None
    end_offset: int | None = None


def _secret_or_value(context: dg.ResolutionContext, raw: str) -> str:
    """An ``{{ env.NAME }}`` template as ``dg.EnvVar(NAME)``; anything else resolved as usual."""
    match = _ENV_TEMPLATE.fullmatch(raw.strip())
    if match:
        return dg.EnvVar(match["attr"] or match["call"])
    return str(context.resolve_value(raw))


def _templates_resolved(context: dg.ResolutionContext, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each ``{{ … }}`` string rendered, nested ones too; others as written.

    Rendering turns ``"0.05"`` into a float, so only strings holding a template go
    through it.
    """
    resolved: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            resolved[key] = _templates_resolved(context.at_path(key), value)
        elif isinstance(value, str) and "{{" in value:
            resolved[key] = context.at_path(key).resolve_value(value)
        else:
            resolved[key] = value
    return resolved


def resolve_provider(
    context: dg.ResolutionContext, provider: ProviderModel
) -> MobileStatusResource:
    """The resource, with the token and base URL kept as ``EnvVar`` when templated."""
    settings = _templates_resolved(context, provider.model_dump(exclude={"base_url", "token"}))
    settings["unit_price"] = str(settings["unit_price"])  # an exact decimal, as text
    return MobileStatusResource(
        base_url=_secret_or_value(context.at_path("base_url"), provider.base_url),
        token=_secret_or_value(context.at_path("token"), provider.token),
        **settings,
    )


def resolve_postgres(
    context: dg.ResolutionContext, postgres: PostgresModel | None
) -> PostgresStoreResource | None:
    """The PostgreSQL store's resource (its URL kept as an ``EnvVar`` when templated), or
    ``None`` for the DuckDB file of ``database``."""
    if postgres is None:
        return None
    settings = _templates_resolved(context, postgres.model_dump(exclude={"url"}))
    return PostgresStoreResource(
        url=_secret_or_value(context.at_path("url"), postgres.url), **settings
    )


def _env_resource() -> MobileStatusResource:
    return MobileStatusResource(base_url=dg.EnvVar(BASE_URL), token=dg.EnvVar(TOKEN))


def resolve_freshness(context: dg.ResolutionContext, freshness: FreshnessModel) -> Freshness:
    """:class:`Freshness` from day counts."""
    values = _templates_resolved(context, freshness.model_dump())
    overrides = {label: float(days) for label, days in values["by_status_days"].items()}
    return Freshness.from_days(float(values["max_age_days"]), overrides)


def resolve_time_partitions(
    context: dg.ResolutionContext, partitions: TimePartitionsModel | None
) -> dg.TimeWindowPartitionsDefinition | None:
    """The time-window partitions definition of the model's cadence, or ``None``."""
    if partitions is None:
        return None
    values = _templates_resolved(context, partitions.model_dump(exclude_none=True))
    cadence = values.pop("cadence")
    refused = sorted(set(values) & _OFFSETS - _OFFSETS_OF[cadence])
    if refused:
        raise ConfigurationError(
            "time_partitions",
            f"{cadence} partitions take {', '.join(sorted(_OFFSETS_OF[cadence]))} only, "
            f"not {', '.join(refused)}",
        )
    return _TIME_PARTITIONS[cadence](**values)


class MobileStatusScaffolder(dg.Scaffolder[dg.Model]):
    """Writes a ``defs.yaml`` whose secrets are ``{{ env.* }}`` templates, never values."""

    def scaffold(self, request: dg.ScaffoldRequest[dg.Model]) -> None:
        """Write the component's ``defs.yaml``."""
        dg.scaffold_component(
            request,
            {
                "database": DEFAULT_DB,
                "source_table": DEFAULT_SOURCE,
                "set_column": "set_id",
                "mobile_column": "mobile",
                "provider": {
                    "base_url": f"{{{{ env.{BASE_URL} }}}}",
                    "token": f"{{{{ env.{TOKEN} }}}}",
                    "unit_price": "0.05",
                    "max_concurrency": 64,
                },
            },
        )


@dg.scaffold_with(MobileStatusScaffolder)
@dataclass
class MobileStatusComponent(dg.Component, dg.Resolvable):
    """Enrich a table of mobile numbers with their live status, incrementally.

    One component is one instance: one source table, one provider account. Give a
    second instance in the same project a ``key_prefix``; every name (assets, sensors,
    schedule, pool, resource keys, tables) is then derived from it.

    The store is the DuckDB file ``database`` (default ``mobile_status.duckdb`` under the
    project's root), or, with a ``postgres`` block, a PostgreSQL database (the source
    table is then read from it too): set one of the two, not both.

    Example ``defs.yaml``:

    .. code-block:: yaml

        type: mobile_status_dagster.MobileStatusComponent
        attributes:
          database: warehouse.duckdb
          source_table: crm.phone_lists
          set_column: list_id
          mobile_column: phone
          provider:
            base_url: "{{ env.MOBILE_STATUS_BASE_URL }}"
            token: "{{ env.MOBILE_STATUS_TOKEN }}"
            unit_price: "0.05"
            qps: 200

    On PostgreSQL, instead of ``database``:

    .. code-block:: yaml

          postgres:
            url: "{{ env.MOBILE_STATUS_STORE }}"
            db_schema: crm
    """

    provider: Annotated[
        MobileStatusResource,
        dg.Resolver(
            resolve_provider,
            model_field_type=ProviderModel,
            inject_before_resolve=False,
            description="The provider account (MobileStatusResource settings).",
        ),
    ] = field(default_factory=lambda: _env_resource())
    database: str | None = None
    duckdb_memory_limit: str | None = None
    postgres: Annotated[
        PostgresStoreResource | None,
        dg.Resolver(
            resolve_postgres,
            model_field_type=PostgresModel | None,
            inject_before_resolve=False,
            description="A PostgreSQL store instead of the DuckDB file (PostgresStoreResource).",
        ),
    ] = None
    source_table: str = DEFAULT_SOURCE
    set_column: str | None = "set_id"
    mobile_column: str = "mobile"
    time_column: str | None = None
    time_partitions: Annotated[
        dg.TimeWindowPartitionsDefinition | None,
        dg.Resolver(
            resolve_time_partitions,
            model_field_type=TimePartitionsModel | None,
            inject_before_resolve=False,
            description="Time-window partitions over time_column (instead of set partitions).",
        ),
    ] = None
    freshness: Annotated[
        Freshness,
        dg.Resolver(
            resolve_freshness,
            model_field_type=FreshnessModel,
            inject_before_resolve=False,
            description="How long answers are served from the cache.",
        ),
    ] = field(default_factory=Freshness)
    max_partitions_per_run: int | None = None
    key_prefix: str | Sequence[str] | None = None
    pool: str | None = None
    group_name: str | None = None
    new_sets_sensor: bool = True
    new_sets_interval_s: int = 60
    automation_sensor: bool = True
    automation_interval_s: int = 30
    refresh_cron: str = "0 3 * * *"

    def build_assets(self, context: dg.ComponentLoadContext) -> MobileStatusAssets:
        """The factory's definitions for this component's options (override to adjust)."""
        return build_mobile_status_assets(
            source_table=self.source_table,
            set_column=self.set_column,
            mobile_column=self.mobile_column,
            time_column=self.time_column,
            partitions_def=self.time_partitions,
            freshness=self.freshness,
            max_partitions_per_run=self.max_partitions_per_run,
            key_prefix=self.key_prefix,
            pool=self.pool,
            group_name=self.group_name,
            duckdb_resource_key=self.store_resource_key,
            new_sets_sensor=self.new_sets_sensor,
            new_sets_interval_s=self.new_sets_interval_s,
            automation_sensor=self.automation_sensor,
            automation_interval_s=self.automation_interval_s,
            refresh_cron=self.refresh_cron,
        )

    @property
    def store_resource_key(self) -> str:
        """The store's resource key: ``duckdb`` or ``mobile_status_store`` (PostgreSQL),
        after the key prefix, since each component brings its own store resource."""
        key = DUCKDB_RESOURCE_KEY if self.postgres is None else POSTGRES_RESOURCE_KEY
        return f"{MobileStatusNames.of(self.key_prefix).prefix}{key}"

    def build_duckdb_resource(self, context: dg.ComponentLoadContext) -> DuckDBResource:
        """The DuckDB resource of ``database``; a relative path is under the project's root."""
        config = {"memory_limit": self.duckdb_memory_limit} if self.duckdb_memory_limit else {}
        path = self.database or DEFAULT_DB
        database = Path(path)
        if path != ":memory:" and not database.is_absolute():
            database = context.project_root / database
        return DuckDBResource(database=str(database), connection_config=config)

    def build_store_resource(
        self, context: dg.ComponentLoadContext
    ) -> DuckDBResource | PostgresStoreResource:
        """The ``postgres`` store if set, else the DuckDB file of ``database``.

        Raises:
            ConfigurationError: ``postgres`` is set together with ``database`` or
                ``duckdb_memory_limit``, which would be ignored.
        """
        if self.postgres is None:
            return self.build_duckdb_resource(context)
        ignored = [
            name for name in ("database", "duckdb_memory_limit") if getattr(self, name) is not None
        ]
        if ignored:
            raise ConfigurationError(
                "postgres",
                f"the store is PostgreSQL, so {' and '.join(ignored)} would be ignored; "
                "set either postgres or the DuckDB settings",
            )
        return self.postgres

    def build_resources(
        self, context: dg.ComponentLoadContext, built: MobileStatusAssets
    ) -> dict[str, Any]:
        """The resources under the keys ``built`` requires."""
        return {
            built.api_resource_key: self.provider,
            built.duckdb_resource_key: self.build_store_resource(context),
        }

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The assets, checks, sensors and schedule, with their resources."""
        built = self.build_assets(context)
        return dg.Definitions.merge(
            built.definitions, dg.Definitions(resources=self.build_resources(context, built))
        )
