"""Fixtures: a simulator on loopback, a DuckDB file per test, and a PostgreSQL server per
session with an empty database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mobile_status_dagster.simulator import SimulatorConfig, SimulatorServer
from tests.postgres_server import PostgresServer, PostgresServerInfo, PostgresUnavailable
from tests.support import DemoRun, base_env, run_cli
from tests.warehouses import BACKENDS, Warehouse, make_warehouse


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    """How :func:`simulator` is configured: answering at once (latency 0), seed 0, demo token.

    A module that needs another seed or token overrides this fixture, not ``simulator``.
    """
    return SimulatorConfig(latency_ms=0)


@pytest.fixture
def simulator(simulator_config: SimulatorConfig) -> Iterator[SimulatorServer]:
    """The provider simulator on 127.0.0.1, configured by :func:`simulator_config`."""
    with SimulatorServer(simulator_config) as server:
        yield server


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Path of a fresh DuckDB file."""
    return tmp_path / "numbers.duckdb"


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests use ephemeral Dagster instances unless they set DAGSTER_HOME themselves."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServerInfo]:
    """A PostgreSQL server on 127.0.0.1, started once per session when a test first asks.

    Its database :attr:`~PostgresServerInfo.dbname` is shared by the session; a test that
    writes uses :func:`postgres_url`. Where no server can start the test is skipped, but under
    ``CI=true`` it fails: CI must not pass by skipping the PostgreSQL tests.
    """
    server = PostgresServer()
    try:
        info = server.start()
    except PostgresUnavailable as exc:
        server.stop()
        reason = f"no PostgreSQL server for tests: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield info
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServerInfo) -> Iterator[str]:
    """URL of a new empty database ``test_<uuid hex>`` on :func:`postgres_server`, dropped after."""
    with postgres_server.fresh_database() as database:
        yield database.url


@pytest.fixture(params=BACKENDS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    """The test's store, once per backend (ids ``duckdb`` / ``postgresql``): a fresh DuckDB
    file, or a fresh PostgreSQL database that runs find through ``$MOBILE_STATUS_STORE``."""
    return make_warehouse(request, tmp_path)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``mobile-status demo`` run once per session, with no mobile-status or Dagster
    setting in the environment, for the tests that only read what it wrote and printed
    (a test that changes the demo's directory runs its own)."""
    cwd = tmp_path_factory.mktemp("demo-run")
    directory = cwd / "demo"
    result = run_cli("demo", "--dir", str(directory), env=base_env(), cwd=cwd, timeout=300)
    return DemoRun(directory, result)
