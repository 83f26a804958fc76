"""A first end-to-end check: one Dagster run over two overlapping sets."""

from __future__ import annotations

from pathlib import Path

from mobile_status_dagster.simulator import SimulatorServer
from tests.support import query, run_sets, sample_numbers, seed_sets


def test_overlapping_sets_are_billed_once(simulator: SimulatorServer, db: Path) -> None:
    numbers = sample_numbers(300)
    seed_sets(db, {"a": numbers[:200], "b": numbers[100:]})
    (run,) = run_sets(simulator, db, ["a", "b"])
    assert run.success, run.message
    billed = simulator.provider.ledger(billed_only=True)
    assert len({e.mobile for e in billed}) == len(billed)
    assert query(db, "SELECT count(*) FROM mobile_status") == [(400,)]
