"""``MobileStatusComponent``: an instance of the library declared in a ``defs.yaml``.

The tests build throwaway ``dg`` projects under ``tmp_path``: one is scaffolded, checked
and listed with the real ``dg`` command line; another is written by hand, loaded in
process and materialized against the simulator on loopback, into a real DuckDB file.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster.components.resolved.errors import ResolutionException
from dagster_duckdb import DuckDBResource
from dagster_shared.yaml_utils import load_yaml_from_path

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.integration import component as component_module
from mobile_status_dagster.integration.assets import MobileStatusAssets, build_mobile_status_assets
from mobile_status_dagster.integration.component import (
    FreshnessModel,
    MobileStatusComponent,
    ProviderModel,
)
from mobile_status_dagster.integration.resources import MobileStatusResource
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorServer
from tests.support import (
    asked,
    backdate,
    base_env,
    make_dg_project,
    numbers_with_status,
    query,
    requests_since,
    run_dg,
    sample_numbers,
    seed_sets,
    truth,
    write_component,
)

COMPONENT_TYPE = "mobile_status_dagster.MobileStatusComponent"
SECRET = "SECRETTOKEN0NEVER0WRITTEN0000000"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
CRM_KEYS = [
    dg.AssetKey(["crm", "mobile_status"]),
    dg.AssetKey(["crm", "mobile_status_summary"]),
    dg.AssetKey(["crm", "mobile_status_charges"]),
]
CHECK_NAMES = {"coverage", "audit_reconciliation", "no_double_billing"}


# --- helpers --------------------------------------------------------------------------


def attributes_of(path: Path) -> tuple[str, dict[str, Any]]:
    """The ``type`` and the ``attributes`` of a ``defs.yaml``."""
    document = load_yaml_from_path(str(path))
    assert isinstance(document, dict)
    attributes = document["attributes"]
    assert isinstance(attributes, dict)
    return str(document["type"]), attributes


def provider_from_env(resource: object, token: str, base_url: str) -> MobileStatusResource:
    """``resource`` is a provider resource whose token and base URL are the environment
    variables named ``token`` and ``base_url`` (read at run start, never stored)."""
    assert isinstance(resource, MobileStatusResource)
    assert isinstance(resource.token, dg.EnvVar)
    assert resource.token.env_var_name == token
    assert isinstance(resource.base_url, dg.EnvVar)
    assert resource.base_url.env_var_name == base_url
    return resource


def stored_text(instance: dg.DagsterInstance, run_id: str) -> tuple[str, str]:
    """Everything the instance stored about a run, serialized: the run record with its
    config and tags, and every event; then the job and execution plan snapshots."""
    run = instance.get_run_by_id(run_id)
    assert run is not None
    records = dg.serialize_value(run) + "".join(
        dg.serialize_value(entry) for entry in instance.all_logs(run_id)
    )
    assert run.job_snapshot_id is not None
    assert run.execution_plan_snapshot_id is not None
    snapshots = dg.serialize_value(
        instance.get_job_snapshot(run.job_snapshot_id)
    ) + dg.serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))
    return records, snapshots


# --- scaffold, check, list (the dg command line) --------------------------------------


def test_scaffolded_component_checks_and_lists_without_writing_the_token(tmp_path: Path) -> None:
    """``dg scaffold defs`` writes a ``defs.yaml`` whose token and base URL are
    ``{{ env.* }}`` templates (the token in the environment is not copied into it);
    ``dg check defs`` then loads it without any provider setting in the environment,
    and ``dg list defs --json`` shows every asset, check, sensor and schedule."""
    project = make_dg_project(tmp_path / "scaffolded", "phone_project")
    env = base_env(PYTHONPATH=str(project), MOBILE_STATUS_TOKEN=SECRET)
    scaffold = run_dg("scaffold", "defs", COMPONENT_TYPE, "phone_lists", cwd=project, env=env)
    assert scaffold.returncode == 0, scaffold.stderr
    path = project / "phone_project" / "defs" / "phone_lists" / "defs.yaml"
    assert path.is_file()
    text = path.read_text()
    assert SECRET not in text
    kind, attributes = attributes_of(path)
    assert kind == COMPONENT_TYPE
    assert attributes["provider"]["token"] == "{{ env.MOBILE_STATUS_TOKEN }}"
    assert attributes["provider"]["base_url"] == "{{ env.MOBILE_STATUS_BASE_URL }}"
    assert all(SECRET not in out for out in (scaffold.stdout, scaffold.stderr))

    # Loading needs no provider setting: the token is read at run start, by name.
    checked = run_dg("check", "defs", cwd=project, env=base_env(PYTHONPATH=str(project)))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    listed = run_dg("list", "defs", "--json", cwd=project, env=env)
    assert listed.returncode == 0, listed.stderr
    assert SECRET not in listed.stdout + listed.stderr
    listing = json.loads(listed.stdout)
    assert {a["asset_key"] for a in listing["assets"]} == {
        "mobile_status",
        "mobile_status_summary",
        "mobile_status_charges",
    }
    assert {(c["asset_key"], c["name"]) for c in listing["asset_checks"]} == {
        ("mobile_status", name) for name in CHECK_NAMES
    }
    assert {s["name"] for s in listing["sensors"]} == {
        "mobile_status_new_sets",
        "mobile_status_automation",
    }
    assert [s["name"] for s in listing["schedules"]] == ["mobile_status_refresh_stale"]
    assert {r["name"] for r in listing["resources"]} == {"mobile_status_api", "duckdb"}


# --- a hand-written defs.yaml, loaded in process and materialized ---------------------


@dataclass(frozen=True)
class YamlProject:
    """A project with two components: ``phone_lists`` (default names) and ``crm_lists``
    (``key_prefix: crm``), both over ``db``."""

    root: Path
    package: str
    db: Path


@pytest.fixture
def yaml_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[YamlProject]:
    """The project on ``sys.path`` (its package name is unique to this module)."""
    package = "phone_project_component_yaml"
    root = make_dg_project(tmp_path / "project", package)
    db = tmp_path / "warehouse.duckdb"
    write_component(
        root,
        package,
        "phone_lists",
        f"""\
        type: {COMPONENT_TYPE}
        attributes:
          database: "{db}"
        """,
    )
    write_component(
        root,
        package,
        "crm_lists",
        f"""\
        type: {COMPONENT_TYPE}
        attributes:
          database: "{db}"
          key_prefix: crm
          provider:
            base_url: "{{{{ env.MOBILE_STATUS_BASE_URL }}}}"
            token: "{{{{ env.MOBILE_STATUS_TOKEN }}}}"
            unit_price: "0.05"
            max_concurrency: 8
          freshness:
            max_age_days: 10
            by_status_days:
              vacant: 2
        """,
    )
    monkeypatch.syspath_prepend(str(root))
    yield YamlProject(root, package, db)
    for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        del sys.modules[name]


# Resolving the asset graph rebuilds the checks through a beta Dagster parameter.
@pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
def test_yaml_component_materializes_against_the_simulator(
    yaml_project: YamlProject, simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded through the project's ``definitions.py``, the ``crm`` component's asset
    materializes one set against the simulator: every seeded number is published with
    its status, the provider saw exactly those numbers, and its checks pass. The token
    and base URL are ``EnvVar``s: their values appear nowhere in the run's storage, only
    their names. The YAML's provider settings and freshness block are applied (the
    freshness shown by which numbers a second run pays for again)."""
    monkeypatch.setenv("MOBILE_STATUS_BASE_URL", simulator.base_url)
    monkeypatch.setenv("MOBILE_STATUS_TOKEN", DEMO_TOKEN)
    numbers = list(
        dict.fromkeys([*sample_numbers(30, seed=53), *numbers_with_status(Status.VACANT, 3)])
    )
    seed_sets(yaml_project.db, {"crm-leads": numbers})

    module = importlib.import_module(f"{yaml_project.package}.definitions")
    defs = module.defs()
    assert isinstance(defs, dg.Definitions)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        f"{prefix}{name}"
        for prefix in ("", "crm/")
        for name in ("mobile_status", "mobile_status_summary", "mobile_status_charges")
    }
    resources = defs.resources or {}
    assert set(resources) == {"mobile_status_api", "duckdb", "crm_mobile_status_api", "crm_duckdb"}

    api = provider_from_env(
        resources["crm_mobile_status_api"], "MOBILE_STATUS_TOKEN", "MOBILE_STATUS_BASE_URL"
    )
    assert (api.unit_price, api.max_concurrency) == ("0.05", 8)
    duckdb_resource = resources["crm_duckdb"]
    assert isinstance(duckdb_resource, DuckDBResource)
    assert duckdb_resource.database == str(yaml_project.db)

    # The component object itself, from the same YAML: its freshness block.
    tree = dg.ComponentTree.for_project(yaml_project.root)
    components = tree.get_all_components(of_type=MobileStatusComponent)
    (crm,) = [c for c in components if c.key_prefix == "crm"]
    assert crm.freshness == Freshness(
        max_age=timedelta(days=10), by_status={Status.VACANT: timedelta(days=2)}
    )

    enrichment = defs.resolve_assets_def(CRM_KEYS[0])
    assert isinstance(enrichment.partitions_def, dg.DynamicPartitionsDefinition)
    assert enrichment.partitions_def.name == "crm_mobile_status_sets"
    checks = [
        a
        for a in graph.assets_defs
        if isinstance(a, dg.AssetChecksDefinition)
        and {k.asset_key for k in a.check_keys} == {enrichment.key}
    ]
    targets = [*(defs.resolve_assets_def(k) for k in CRM_KEYS), *checks]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("crm_mobile_status_sets", ["crm-leads"])

    def materialize() -> dg.ExecuteInProcessResult:
        # The loaded definitions carry their resources: none are passed here.
        result = dg.materialize(
            targets, partition_key="crm-leads", instance=instance, run_config=QUIET
        )
        assert result.success
        evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert evaluations == dict.fromkeys(CHECK_NAMES, True)
        return result

    first = materialize()
    ledger = simulator.provider.ledger()
    assert asked(ledger) == sorted(numbers)
    assert all(e.token_ok for e in ledger)
    published = query(
        yaml_project.db,
        "SELECT mobile, status_code, status FROM crm_mobile_status WHERE set_id = 'crm-leads'",
    )
    assert sorted(str(m) for m, _, _ in published) == sorted(numbers)
    for mobile, code, status in published:
        assert code == truth(str(mobile))
        assert status == Status(code).label
    tables = {str(t) for (t,) in query(yaml_project.db, "SELECT table_name FROM duckdb_tables()")}
    assert {"crm_mobile_status", "crm_provider_calls", "crm_mobile_status_latest"} <= tables
    assert tables.isdisjoint({"mobile_status", "provider_calls", "mobile_status_latest"})

    # The secrets are stored by name only.
    records, snapshots = stored_text(instance, first.run_id)
    for text in (records, snapshots):
        assert DEMO_TOKEN not in text
        assert simulator.base_url not in text
    assert "MOBILE_STATUS_TOKEN" in snapshots  # the resource config is in there, by name

    # Freshness from the YAML: 11-day-old answers are stale (max_age_days: 10, not the
    # default 30); 3-day-old ones are fresh, except vacant ones (vacant: 2).
    unknown = [m for m in numbers if truth(m) == Status.UNKNOWN]
    vacant = [m for m in numbers if truth(m) == Status.VACANT]
    old = [m for m in numbers[:15] if m not in vacant]
    recent = [m for m in numbers if m not in old]
    assert len(vacant) >= 3
    assert len(set(old) - set(unknown)) >= 10
    backdate(yaml_project.db, old, 11, prefix="crm_", audit=True)
    backdate(yaml_project.db, recent, 3, prefix="crm_", audit=True)
    mark = len(ledger)
    materialize()  # its no_double_billing check judges re-billing by the YAML's freshness too
    again = asked(requests_since(simulator, mark))
    assert again == sorted({*old, *vacant, *unknown})
    assert set(recent) - set(vacant) - set(unknown)  # some 3-day-old answers were kept


# --- every option from YAML -----------------------------------------------------------

DERIVED = {
    "partitions_def": "time_partitions",
    "api_resource_key": "key_prefix",
    "duckdb_resource_key": "key_prefix",
}
"""Factory keywords the component derives from another of its fields."""

COMPONENT_ONLY = {"provider", "database", "duckdb_memory_limit", "postgres", "time_partitions"}
"""Component fields that are not factory keywords: the resources and the partitions."""


def test_component_fields_cover_every_factory_option_and_resource_setting() -> None:
    """Every keyword of ``build_mobile_status_assets`` is a field of the component (or
    derived by it), with the same default; every field of ``MobileStatusResource`` is a
    field of the YAML provider model, with the same default (the token and base URL
    default to their ``{{ env.* }}`` templates). Adding an option to one side only fails."""
    factory = inspect.signature(build_mobile_status_assets).parameters
    fields = {f.name: f for f in dataclasses.fields(MobileStatusComponent)}
    assert set(factory) - set(DERIVED) - set(fields) == set()
    assert set(fields) - set(factory) == COMPONENT_ONLY
    assert set(DERIVED.values()) <= set(fields)
    for name in set(factory) & set(fields):
        field = fields[name]
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )
        if name == "freshness":  # the factory's None means Freshness()
            assert factory[name].default is None
            assert default == Freshness() == Freshness.from_days(**FreshnessModel().model_dump())
        else:
            assert default == factory[name].default, name

    settings = MobileStatusResource.model_fields
    provider = ProviderModel.model_fields
    assert set(provider) == set(settings)
    for name, setting in settings.items():
        if setting.is_required():
            assert provider[name].default == f"{{{{ env.MOBILE_STATUS_{name.upper()} }}}}"
        else:
            assert provider[name].default == setting.default, name


EVERY_OPTION = """\
provider:
  base_url: "{{ env('CRM_BASE_URL') }}"
  token: "{{ env.CRM_TOKEN }}"
  token_placement: query
  timeout_s: 4.5
  max_concurrency: 8
  qps: 120
  max_retries: 1
  unit_price: "0.045"
  currency: USD
  max_billed_per_run: 500
database: /data/crm.duckdb
duckdb_memory_limit: 512MB
source_table: crm.phone_lists
set_column: list_id
mobile_column: phone
time_column: dropped_at
time_partitions:
  cadence: weekly
  start_date: "2026-01-04"
  end_date: "2026-06-07"
  timezone: Asia/Shanghai
freshness:
  max_age_days: 10
  by_status_days: {vacant: 2, powered_off: 5}
max_partitions_per_run: 4
key_prefix: [crm, cn]
pool: crm_pool
group_name: crm_group
new_sets_sensor: false
new_sets_interval_s: 120
automation_sensor: false
automation_interval_s: 45
refresh_cron: "0 4 * * 1"
"""


def test_every_option_and_setting_set_in_yaml_reaches_the_factory_and_the_resources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A YAML that sets every option and setting to a non-default value: each one is
    passed to ``build_mobile_status_assets`` or lands on the resources as written
    (``{{ env.* }}`` / ``{{ env('…') }}`` become ``EnvVar``s; the price stays exact text)."""
    calls: list[dict[str, Any]] = []

    def spy(**options: Any) -> MobileStatusAssets:
        calls.append(options)
        return build_mobile_status_assets(**options)

    monkeypatch.setattr(component_module, "build_mobile_status_assets", spy)
    component = MobileStatusComponent.resolve_from_yaml(EVERY_OPTION)
    context = dg.ComponentTree.for_test().load_context
    defs = component.build_defs(context)

    (options,) = calls
    assert options == {
        "source_table": "crm.phone_lists",
        "set_column": "list_id",
        "mobile_column": "phone",
        "time_column": "dropped_at",
        "partitions_def": dg.WeeklyPartitionsDefinition(
            start_date="2026-01-04", end_date="2026-06-07", timezone="Asia/Shanghai"
        ),
        "freshness": Freshness(
            max_age=timedelta(days=10),
            by_status={Status.VACANT: timedelta(days=2), Status.POWERED_OFF: timedelta(days=5)},
        ),
        "max_partitions_per_run": 4,
        "key_prefix": ["crm", "cn"],
        "pool": "crm_pool",
        "group_name": "crm_group",
        "duckdb_resource_key": "crm_cn_duckdb",
        "new_sets_sensor": False,
        "new_sets_interval_s": 120,
        "automation_sensor": False,
        "automation_interval_s": 45,
        "refresh_cron": "0 4 * * 1",
    }
    factory = inspect.signature(build_mobile_status_assets).parameters
    for name, value in options.items():
        assert value != factory[name].default, name

    resources = defs.resources or {}
    assert set(resources) == {"crm_cn_mobile_status_api", "crm_cn_duckdb"}
    api = provider_from_env(resources["crm_cn_mobile_status_api"], "CRM_TOKEN", "CRM_BASE_URL")
    written = {
        "token_placement": "query",
        "timeout_s": 4.5,
        "max_concurrency": 8,
        "qps": 120,
        "max_retries": 1,
        "unit_price": "0.045",
        "currency": "USD",
        "max_billed_per_run": 500,
    }
    assert set(written) | {"token", "base_url"} == set(MobileStatusResource.model_fields)
    for name, value in written.items():
        assert getattr(api, name) == value, name
        assert value != MobileStatusResource.model_fields[name].default, name
    assert isinstance(api.unit_price, str)
    database = resources["crm_cn_duckdb"]
    assert isinstance(database, DuckDBResource)
    assert database.database == "/data/crm.duckdb"
    assert database.connection_config == {"memory_limit": "512MB"}


def test_templates_in_numeric_fields_offsets_and_a_relative_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Numbers may come from ``{{ env.* }}``; time partitions take Dagster's offsets; a
    relative ``database`` is under the project's root, not the working directory."""
    monkeypatch.setenv("MAXC", "12")
    monkeypatch.setenv("DAYS", "9")
    component = MobileStatusComponent.resolve_from_yaml(
        textwrap.dedent(
            """
            database: data/phones.duckdb
            set_column: null
            time_column: dropped_at
            time_partitions:
              cadence: weekly
              start_date: "2026-01-05"
              day_offset: 1
              hour_offset: 6
            freshness:
              max_age_days: "{{ env.DAYS }}"
              by_status_days: {vacant: "{{ env.DAYS }}"}
            provider:
              max_concurrency: "{{ env.MAXC }}"
            """
        )
    )
    assert component.provider.max_concurrency == 12
    assert component.freshness == Freshness(
        max_age=timedelta(days=9), by_status={Status.VACANT: timedelta(days=9)}
    )
    partitions = component.time_partitions
    assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
    assert partitions.get_first_partition_key() == "2026-01-05"  # a Monday, at 06:00
    assert partitions.cron_schedule == "0 6 * * 1"
    context = dg.ComponentTree.for_test().load_context
    database = component.build_duckdb_resource(context).database
    assert Path(database) == context.project_root / "data" / "phones.duckdb"

    # Dagster's own **kwargs would take the offset silently; ours names it, at its YAML line.
    with pytest.raises(ResolutionException, match="hourly partitions take minute_offset only"):
        MobileStatusComponent.resolve_from_yaml(
            "time_partitions: {cadence: hourly, start_date: '2026-01-01-00:00', day_offset: 1}"
        )


def test_a_postgres_block_replaces_the_duckdb_file_and_refuses_to_be_combined_with_it() -> None:
    """``postgres`` makes the store a ``PostgresStoreResource`` (url template as ``EnvVar``,
    a literal schema as written) under ``<prefix>mobile_status_store``; together with
    ``database`` or ``duckdb_memory_limit``, which it would ignore, it is refused by name."""
    from mobile_status_dagster.core.errors import ConfigurationError
    from mobile_status_dagster.integration.resources import PostgresStoreResource

    context = dg.ComponentTree.for_test().load_context
    component = MobileStatusComponent.resolve_from_yaml(
        "key_prefix: [crm, cn]\npostgres: {url: \"{{ env('CRM_STORE') }}\", db_schema: crm}"
    )
    built = component.build_assets(context)
    assert built.duckdb_resource_key == "crm_cn_mobile_status_store"
    store = component.build_resources(context, built)["crm_cn_mobile_status_store"]
    assert isinstance(store, PostgresStoreResource)
    assert isinstance(store.url, dg.EnvVar)
    assert store.url.env_var_name == "CRM_STORE"
    assert store.db_schema == "crm"
    default = MobileStatusComponent.resolve_from_yaml("postgres: {}")
    assert default.postgres is not None
    assert isinstance(default.postgres.url, dg.EnvVar)
    assert default.postgres.url.env_var_name == "MOBILE_STATUS_STORE"
    assert default.store_resource_key == "mobile_status_store"
    assert MobileStatusComponent().store_resource_key == "duckdb"

    for extra in ("database: w.duckdb", "duckdb_memory_limit: 1GB"):
        both = MobileStatusComponent.resolve_from_yaml(f"postgres: {{}}\n{extra}")
        with pytest.raises(ConfigurationError, match=rf"postgres: .*{extra.split(':')[0]}"):
            both.build_defs(context)
