"""Fixtures: a simulator on loopback and a DuckDB file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mobile_status_dagster.simulator import SimulatorConfig, SimulatorServer


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
