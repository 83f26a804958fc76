"""Fixtures: a simulator on loopback and a DuckDB file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mobile_status_dagster.simulator import SimulatorConfig, SimulatorServer


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """The provider simulator on 127.0.0.1, answering at once (latency 0)."""
    with SimulatorServer(SimulatorConfig(latency_ms=0)) as server:
        yield server


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Path of a fresh DuckDB file."""
    return tmp_path / "numbers.duckdb"


@pytest.fixture(autouse=True)
def _no_dagster_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests use ephemeral Dagster instances unless they set DAGSTER_HOME themselves."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
