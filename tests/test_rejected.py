"""A number our rules accept but the provider rejects (4003) is not asked again while fresh."""

from __future__ import annotations

from pathlib import Path

from mobile_status_dagster.simulator import SimulatorServer
from tests.support import query, run_sets, sample_numbers, seed_sets


def test_a_4003_rejection_is_kept_like_an_answer_until_it_goes_stale(
    simulator: SimulatorServer, db: Path
) -> None:
    numbers = sample_numbers(30, seed=44)
    rejected = numbers[0]
    decide = simulator.provider.decide

    def reject_one(mobile: str | None, token: str | None) -> object:
        # The simulator's own rule would accept it: stand in for the provider's stricter one.
        return decide("1" if mobile == rejected else mobile, token)

    simulator.provider.decide = reject_one  # type: ignore[method-assign,assignment]
    seed_sets(db, {"a": numbers})
    first = run_sets(simulator, db, ["a"])
    assert first[0].success, first[0].message
    assert query(
        db, "SELECT valid, invalid_reason, source FROM mobile_status WHERE mobile = ?", [rejected]
    ) == [(False, "provider_rejected", "provider")]
    asked = [e.mobile for e in simulator.provider.ledger()]

    second = run_sets(simulator, db, ["a"])
    assert second[0].success, second[0].message
    again = [e.mobile for e in simulator.provider.ledger()][len(asked) :]
    assert "1" not in again  # the rejected number was not sent again
    assert query(
        db, "SELECT invalid_reason, source FROM mobile_status WHERE mobile = ?", [rejected]
    ) == [("provider_rejected", "cache")]

    query(
        db,
        "UPDATE mobile_status_latest SET checked_at = checked_at - INTERVAL 31 DAY "
        "WHERE mobile = ?",
        [rejected],
    )
    before = len(simulator.provider.ledger())
    assert run_sets(simulator, db, ["a"])[0].success
    assert "1" in [e.mobile for e in simulator.provider.ledger()][before:]
