"""The deployment example in ``docs/deployment/`` is checked, not only written.

Docker cannot run here, so the compose file is never started: its structure is checked
(:func:`test_the_compose_file_gives_every_dagster_service_what_dagster_yaml_reads`), and the
instance ``dagster.yaml`` describes is built as is against the real test PostgreSQL server
and runs the library's asset, its run and events in dagster-postgres, the library's state in
a second database (:func:`test_dagster_yaml_runs_the_asset_with_every_state_in_postgresql`).
"""

from __future__ import annotations

import re
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml
from dagster_docker import DockerRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import build_mobile_status_assets
from mobile_status_dagster.integration.definitions import (
    POSTGRES_RESOURCE_KEY,
    build_default_definitions,
)
from mobile_status_dagster.integration.resources import PostgresStoreResource
from mobile_status_dagster.simulator import SimulatorServer
from tests.postgres_server import PostgresServerInfo
from tests.support import billable, billed_twice, sample_numbers
from tests.test_postgres_dagster import run_pg
from tests.test_postgres_engine import assert_published, pg_rows, seed_pg_sets

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = REPO / "docs" / "deployment"
DAGSTER_YAML = DEPLOYMENT / "dagster.yaml"
COMPOSE = DEPLOYMENT / "docker-compose.yaml"
DAGSTER_SERVICES = ("user_code", "webserver", "daemon")
"""The compose services that run Dagster (and so read ``$DAGSTER_HOME/dagster.yaml``)."""


def load_yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), path
    return loaded


def env_names(node: object) -> set[str]:
    """Every variable an ``{env: NAME}`` of ``node`` reads, at any depth."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {str(node["env"])}
        return set().union(*(env_names(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(env_names(value) for value in node))
    return set()


def passwords(node: object) -> list[object]:
    """The values of every ``password`` key (and ``postgres_url``) of ``node``, at any depth."""
    found: list[object] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("password", "postgres_url"):
                found.append(value)
            found.extend(passwords(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(passwords(value))
    return found


def service_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    environment = compose["services"][service].get("environment", {})
    assert isinstance(environment, dict), f"{service}: environment is a mapping"
    return {str(k): str(v) for k, v in environment.items()}


def storage_env(server: PostgresServerInfo) -> dict[str, str]:
    """What the compose file gives ``DAGSTER_PG_*``, for the test server and ``server.dbname``."""
    return {
        "DAGSTER_PG_HOST": server.host,
        "DAGSTER_PG_PORT": str(server.port),
        "DAGSTER_PG_USER": server.user,
        "DAGSTER_PG_PASSWORD": server.password,
        "DAGSTER_PG_DB": server.dbname,
    }


@pytest.fixture
def dagster_database(postgres_server: PostgresServerInfo) -> Iterator[PostgresServerInfo]:
    """A fresh database for Dagster's own storage."""
    with postgres_server.fresh_database() as database:
        yield database


@pytest.fixture
def store_database(postgres_server: PostgresServerInfo) -> Iterator[PostgresServerInfo]:
    """Another fresh database, for the library's state."""
    with postgres_server.fresh_database() as database:
        yield database


def test_dagster_yaml_runs_the_asset_with_every_state_in_postgresql(
    simulator: SimulatorServer,
    dagster_database: PostgresServerInfo,
    store_database: PostgresServerInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The file as shipped, in a DAGSTER_HOME; its variables set as the compose file sets them.
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    env = storage_env(dagster_database)
    assert env_names(load_yaml(DAGSTER_YAML)["storage"]) == set(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # As in the compose file: the store's URL without its password, which libpq reads from
    # PGPASSWORD.
    url_without_password = (
        f"postgresql://{store_database.user}@{store_database.host}:{store_database.port}"
        f"/{store_database.dbname}"
    )
    monkeypatch.setenv(settings.STORE, url_without_password)
    monkeypatch.setenv("PGPASSWORD", store_database.password)
    sets = {"a": billable(sample_numbers(40, seed=5))}
    seed_pg_sets(store_database.url, sets)

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        # The DockerRunLauncher is built from the file (its config is valid) but never called:
        # dg.materialize executes the run in this process, as Docker is absent here.
        launcher = instance.run_launcher
        assert isinstance(launcher, DockerRunLauncher)
        assert settings.STORE in launcher.env_vars

        built = build_mobile_status_assets(duckdb_resource_key=POSTGRES_RESOURCE_KEY)
        outcome = run_pg(simulator, built, instance, ["a"])
        assert outcome.success, outcome.message
        run = instance.get_run_by_id(outcome.run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.SUCCESS
    finally:
        instance.dispose()

    # The run and its events are rows of dagster-postgres's tables in Dagster's database...
    dagster_url = dagster_database.url
    assert pg_rows(dagster_url, f"SELECT status FROM runs WHERE run_id = '{outcome.run_id}'") == [
        ("SUCCESS",)
    ]
    events = {
        row[0]
        for row in pg_rows(
            dagster_url,
            f"SELECT dagster_event_type FROM event_logs WHERE run_id = '{outcome.run_id}'",
        )
    }
    assert {"ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"} <= events
    assert events & {"RUN_SUCCESS", "PIPELINE_SUCCESS"}  # stored under its legacy name
    # ...and the library's state in its own database, the two not mixed.
    assert_published(store_database.url, "a", sets["a"])
    assert billed_twice(simulator) == []
    tables = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    dagster_tables = {row[0] for row in pg_rows(dagster_url, tables)}
    store_tables = {row[0] for row in pg_rows(store_database.url, tables)}
    assert {"runs", "event_logs"} <= dagster_tables
    assert {"mobile_status", "mobile_status_latest", "provider_calls"} <= store_tables
    assert not dagster_tables & {"mobile_status", "provider_calls"}
    assert not store_tables & {"runs", "event_logs"}
    # Dagster kept the store variable's name, not the URL or the password.
    with psycopg.connect(dagster_url) as conn:
        for (body,) in conn.execute("SELECT run_body FROM runs"):
            assert store_database.password not in body
            assert dagster_database.password not in body


def test_the_compose_file_gives_every_dagster_service_what_dagster_yaml_reads() -> None:
    compose = load_yaml(COMPOSE)
    instance_yaml = load_yaml(DAGSTER_YAML)
    read = env_names(instance_yaml)
    forwarded = instance_yaml["run_launcher"]["config"]["env_vars"]
    assert instance_yaml["run_launcher"]["class"] == "DockerRunLauncher"
    assert instance_yaml["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert set(compose["services"]) == {"postgres", *DAGSTER_SERVICES}

    for service in DAGSTER_SERVICES:
        env = service_env(compose, service)
        assert env.get("DAGSTER_HOME") == "/opt/dagster/dagster_home", service
        assert read <= set(env), f"{service} lacks {read - set(env)}"
        assert env["DAGSTER_PG_HOST"] == "postgres"
    # The daemon launches the runs: every forwarded variable must be set in its environment
    # (DockerRunLauncher refuses to launch on an unset one); the store reaches the code server
    # (the definitions pick PostgreSQL at load) and every run container.
    daemon = service_env(compose, "daemon")
    assert set(forwarded) <= set(daemon), set(forwarded) - set(daemon)
    assert settings.STORE in forwarded
    assert {settings.STORE, settings.BASE_URL, settings.TOKEN} <= set(forwarded)
    code_server = service_env(compose, "user_code")
    store_url = code_server[settings.STORE]
    assert store_url == daemon[settings.STORE]
    assert "DAGSTER_CURRENT_IMAGE" in code_server
    command = compose["services"]["user_code"]["command"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-m") + 1] == "mobile_status_dagster.integration.definitions"
    workspace = load_yaml(DEPLOYMENT / "workspace.yaml")["load_from"][0]["grpc_server"]
    assert workspace["host"] == "user_code"
    assert str(workspace["port"]) == command[command.index("-p") + 1]
    # Run containers join the compose network by the name dagster.yaml gives them.
    network = instance_yaml["run_launcher"]["config"]["network"]
    assert compose["networks"][network]["name"] == network

    # The store's URL names the second database of the same server, with no password in it;
    # the code server's definitions, loaded with it, use the PostgreSQL store as an EnvVar.
    assert re.fullmatch(r"postgresql://mobile_status@postgres:5432/mobile_status", store_url)
    deployment = settings.DeploymentSettings.from_env({settings.STORE: store_url})
    assert deployment.postgres is not None
    assert not deployment.postgres.password
    defs = build_default_definitions(deployment)
    assert defs.resources is not None
    store = defs.resources[POSTGRES_RESOURCE_KEY]
    assert isinstance(store, PostgresStoreResource)
    assert isinstance(store.url, dg.EnvVar)

    # The image installs the `deploy` extra, which has what dagster.yaml loads, and copies the
    # instance and workspace files that exist here into DAGSTER_HOME.
    dockerfile = (DEPLOYMENT / "Dockerfile").read_text(encoding="utf-8")
    assert "-c constraints.txt '.[deploy]'" in dockerfile
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in dockerfile
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    deploy = {re.split(r"[<>=\[ ]", r)[0] for r in project["optional-dependencies"]["deploy"]}
    assert {"dagster-postgres", "dagster-docker", "dagster-webserver"} <= deploy
    copies = re.findall(r"^COPY (.+) \S+$", dockerfile, re.M)
    assert len(copies) == 3, copies
    for copied in copies:
        for source in copied.split():
            assert (REPO / source).exists(), source

    # No password literal: dagster.yaml's passwords are env reads, compose's are
    # interpolations of the environment or .env, never values.
    found = passwords(instance_yaml)
    assert found
    assert all(isinstance(value, dict) and set(value) == {"env"} for value in found), found
    for service, spec in compose["services"].items():
        for name, value in (spec.get("environment") or {}).items():
            if "PASSWORD" in name or name == settings.TOKEN:
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), (service, name, value)
