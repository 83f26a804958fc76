"""The Dagster layer on the PostgreSQL store: real runs (``dg.materialize``) against a real
server and the simulator on loopback; the URL's password never shows."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from mobile_status_dagster.cli.runs import RunOutcome, materialize_sets
from mobile_status_dagster.core.store.postgres import PostgresTarget
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import (
    MobileStatusAssets,
    build_mobile_status_assets,
)
from mobile_status_dagster.integration.automation import STALE_SCHEDULE
from mobile_status_dagster.integration.resources import (
    MASKED,
    LiteralStoreURLWarning,
    MobileStatusResource,
    PostgresStoreResource,
)
from mobile_status_dagster.integration.sensors import NEW_SETS_SENSOR
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorServer
from tests.support import PRICE, billable, billed_twice, one_run, sample_numbers
from tests.test_postgres_engine import assert_published, pg_rows, seed_pg_sets

STORE_KEY = "mobile_status_store"


def pg_resources(sim: SimulatorServer, key: str = STORE_KEY) -> dict[str, Any]:
    """The provider at ``sim`` and the PostgreSQL store from ``$MOBILE_STATUS_STORE``."""
    return {
        "mobile_status_api": MobileStatusResource(
            base_url=sim.base_url, token=DEMO_TOKEN, unit_price=PRICE, max_retries=2
        ),
        key: PostgresStoreResource(url=dg.EnvVar(settings.STORE)),
    }


def run_pg(
    sim: SimulatorServer,
    built: MobileStatusAssets,
    instance: dg.DagsterInstance,
    set_ids: list[str],
) -> RunOutcome:
    return one_run(
        materialize_sets(
            built,
            resources=pg_resources(sim, built.duckdb_resource_key),
            instance=instance,
            set_ids=set_ids,
            log_level="DEBUG",
        )
    )


def check_results(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.AssetCheckEvaluation]:
    records = instance.get_records_for_run(run_id, limit=10_000).records
    found: dict[str, dg.AssetCheckEvaluation] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and isinstance(event.event_specific_data, dg.AssetCheckEvaluation):
            found[event.event_specific_data.check_name] = event.event_specific_data
    return found


def materialized(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, Any]]:
    """Asset key (``/``-joined) → the last materialization's metadata values, for the run."""
    out: dict[str, dict[str, Any]] = {}
    for record in instance.get_records_for_run(run_id, limit=10_000).records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.is_step_materialization:
            m = event.step_materialization_data.materialization
            out[m.asset_key.to_user_string()] = {k: v.value for k, v in m.metadata.items()}
    return out


def assert_password_nowhere(
    instance: dg.DagsterInstance, run_ids: list[str], password: str, *texts: str
) -> None:
    """Not in any event of the runs (logs, metadata, failures), their config, or ``texts``."""
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        assert password not in serialize_value(run)
        records = instance.get_records_for_run(run_id, limit=100_000).records
        assert records
        for record in records:
            assert password not in serialize_value(record.event_log_entry)
    for text in texts:
        assert password not in text


@pytest.fixture
def store_env(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``$MOBILE_STATUS_STORE`` set to the test's database (which has a password)."""
    assert PostgresTarget(postgres_url).password
    monkeypatch.setenv(settings.STORE, postgres_url)
    return postgres_url


def test_the_asset_checks_and_derived_assets_run_on_postgresql(
    simulator: SimulatorServer, store_env: str, capfd: pytest.CaptureFixture[str]
) -> None:
    url = store_env
    password = PostgresTarget(url).password
    assert password
    numbers = billable(sample_numbers(90, seed=41))
    sets = {"a": [*numbers[:50], "not a number"], "b": numbers[30:]}  # 20 shared
    seed_pg_sets(url, sets)
    built = build_mobile_status_assets(duckdb_resource_key=STORE_KEY)
    instance = dg.DagsterInstance.ephemeral()

    first = run_pg(simulator, built, instance, ["a", "b"])
    assert first.success, first.message
    for set_id, members in sets.items():
        assert_published(url, set_id, members)
    assert billed_twice(simulator) == []
    assert first.usage.run_billed == len(numbers)
    assert first.usage.run_sent_to_provider == len(numbers)
    assert first.usage.partitions is not None
    table = first.usage.partitions.value
    assert "| a | 51 | 1 | 0 | 50 | 50 |" in table  # rows, invalid, cached, sent, billed
    assert "| b | 56 | 0 | 0 | 56 | 36 |" in table  # 20 shared with a, billed once
    checks = check_results(instance, first.run_id)
    assert set(checks) == {"coverage", "audit_reconciliation", "no_double_billing"}
    assert all(c.passed for c in checks.values()), checks
    assert checks["coverage"].metadata["mobile_status/scope"].value == "this run's changes"
    assets = materialized(instance, first.run_id)
    assert assets["mobile_status_summary"]["dagster/row_count"] > 0
    assert assets["mobile_status_charges"]["dagster/row_count"] > 0
    summary = pg_rows(url, "SELECT sum(numbers) FROM mobile_status_summary")
    assert summary == [(len(sets["a"]) + len(sets["b"]),)]
    billed = pg_rows(url, "SELECT sum(billed_calls) FROM mobile_status_charges")
    assert billed == [(len(numbers),)]

    calls = len(simulator.provider.ledger())
    again = run_pg(simulator, built, instance, ["a", "b"])
    assert again.success, again.message
    assert len(simulator.provider.ledger()) == calls  # a rerun pays nothing
    assert again.usage.run_sent_to_provider == 0
    assert again.usage.run_billed == 0
    assert all(c.passed for c in check_results(instance, again.run_id).values())

    out, err = capfd.readouterr()
    assert_password_nowhere(instance, [first.run_id, again.run_id], password, out, err)


def test_the_default_store_key_takes_a_postgres_store_too(
    simulator: SimulatorServer, store_env: str
) -> None:
    seed_pg_sets(store_env, {"only": sample_numbers(10, seed=42)})
    built = build_mobile_status_assets()  # duckdb_resource_key="duckdb"
    assert run_pg(simulator, built, dg.DagsterInstance.ephemeral(), ["only"]).success
    assert_published(store_env, "only", sample_numbers(10, seed=42))


def test_a_failing_run_names_the_store_without_its_password(
    simulator: SimulatorServer, store_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = PostgresTarget(store_env)
    password = target.password
    assert password
    # The same server and password, a database that does not exist.
    wrong = store_env.rsplit("/", 1)[0] + "/no_such_database"
    monkeypatch.setenv(settings.STORE, wrong)
    built = build_mobile_status_assets(duckdb_resource_key=STORE_KEY)
    instance = dg.DagsterInstance.ephemeral()
    run = run_pg(simulator, built, instance, ["a"])
    assert not run.success
    assert run.message is not None
    assert "no_such_database" in run.message
    assert password not in run.message
    assert_password_nowhere(instance, [run.run_id], password)
    assert simulator.provider.ledger() == []


def test_the_sensor_and_the_schedule_read_the_postgres_store(
    simulator: SimulatorServer, store_env: str
) -> None:
    seed_pg_sets(store_env, {"s1": sample_numbers(8, seed=43), "s2": sample_numbers(6, seed=44)})
    built = build_mobile_status_assets(duckdb_resource_key=STORE_KEY)
    defs = dg.Definitions.merge(
        built.definitions, dg.Definitions(resources=pg_resources(simulator))
    )
    sensor = defs.resolve_sensor_def(NEW_SETS_SENSOR)
    schedule = defs.resolve_schedule_def(STALE_SCHEDULE)
    store = {STORE_KEY: PostgresStoreResource(url=dg.EnvVar(settings.STORE))}
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, resources=store))
        assert isinstance(result, dg.SensorResult)
        [request] = result.dynamic_partitions_requests or []
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        assert list(request.partition_keys or []) == ["s1", "s2"]
        instance.add_dynamic_partitions(built.names.partitions, ["s1", "s2"])

        def stale() -> list[str]:
            with dg.build_schedule_context(
                instance=instance,
                resources=store,
                scheduled_execution_time=datetime.now(UTC),
                repository_def=defs.get_repository_def(),
            ) as context:
                data = schedule.evaluate_tick(context)
            return [str(r.partition_key) for r in data.run_requests or []]

        assert stale() == ["s1", "s2"]
        assert run_pg(simulator, built, instance, ["s1"]).success
        assert stale() == ["s2"]


def test_the_store_resource_masks_its_password() -> None:
    url = "postgresql://app:s3cr3t-pw@db.example.com:5432/warehouse"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        literal = PostgresStoreResource(url=url, db_schema="ms")
    assert any(issubclass(w.category, LiteralStoreURLWarning) for w in caught)
    for shown in (repr(literal), str(literal), f"{literal}", literal.model_dump_json()):
        assert "s3cr3t-pw" not in shown
        assert MASKED in shown
    assert literal.model_dump()["url"] == "postgresql://app:********@db.example.com:5432/warehouse"
    assert literal.target() == PostgresTarget(url, "ms")  # the real URL, for connecting

    from_env = PostgresStoreResource(url=dg.EnvVar(settings.STORE))
    assert settings.STORE in repr(from_env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PostgresStoreResource(url="postgresql://app@db.example.com/warehouse")  # no password


def test_the_yaml_component_runs_on_a_postgres_store(
    simulator: SimulatorServer, store_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``postgres`` block in the component's YAML: its url template becomes an
    ``EnvVar``, its ``db_schema`` holds every table, and a real run publishes the set
    there, billing each number once; the password is in no event of the run."""
    from mobile_status_dagster.integration.component import MobileStatusComponent

    monkeypatch.setenv(settings.BASE_URL, simulator.base_url)
    monkeypatch.setenv(settings.TOKEN, DEMO_TOKEN)
    numbers = sample_numbers(25, seed=71)
    seed_pg_sets(store_env, {"crm-leads": numbers}, schema="crm")
    component = MobileStatusComponent.resolve_from_yaml(
        """
        key_prefix: crm
        postgres:
          url: "{{ env.MOBILE_STATUS_STORE }}"
          db_schema: crm
        provider:
          unit_price: "0.05"
        """
    )
    assert isinstance(component.postgres, PostgresStoreResource)
    assert isinstance(component.postgres.url, dg.EnvVar)
    assert component.store_resource_key == "crm_mobile_status_store"
    built = component.build_assets(dg.ComponentTree.for_test().load_context)
    resources = component.build_resources(dg.ComponentTree.for_test().load_context, built)
    assert set(resources) == {"crm_mobile_status_api", "crm_mobile_status_store"}
    instance = dg.DagsterInstance.ephemeral()
    run = one_run(
        materialize_sets(
            built, resources=resources, instance=instance, set_ids=["crm-leads"], log_level="DEBUG"
        )
    )
    assert run.success, run.message
    published = pg_rows(store_env, "SELECT count(*) FROM crm.crm_mobile_status")
    assert published == [(len(numbers),)]
    billed = pg_rows(store_env, "SELECT count(*) FROM crm.crm_provider_calls WHERE billed")
    assert billed == [(len(simulator.provider.ledger(billed_only=True)),)]
    assert billed_twice(simulator) == []
    password = PostgresTarget(store_env).password
    assert password is not None
    assert_password_nowhere(instance, [run.run_id], password)
