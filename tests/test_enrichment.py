"""Acceptance tests: real Dagster materializations against the simulator on loopback.

Every test runs the ``mobile_status`` asset through Dagster (``dg.materialize`` via
``tests.support.run_sets``, which is the CLI's path) against a real DuckDB file, and
checks what the provider's ledger saw against what the database kept.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.cli.runs import RunOutcome, materialize_sets
from mobile_status_dagster.core import numbers
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import (
    DEFAULT_PARTITIONS_NAME,
    PROVIDER_POOL,
    MobileStatusAssets,
    build_mobile_status_assets,
)
from mobile_status_dagster.integration.automation import AUTOMATION_SENSOR
from mobile_status_dagster.integration.definitions import (
    build_default_definitions,
    default_resources,
)
from mobile_status_dagster.integration.sensors import NEW_SETS_SENSOR
from mobile_status_dagster.simulator import (
    DEMO_TOKEN,
    SimulatorServer,
    number_truth,
)
from tests.support import (
    PRICE,
    ROTATED_TOKEN,
    asked,
    assert_nothing_billed_twice,
    backdate,
    billable,
    one_run,
    query,
    requests_since,
    resources,
    revoke_token_after,
    run_sets,
    sample_numbers,
    seed_sets,
    truth,
)

REPO = Path(__file__).resolve().parents[1]
ASSET_KEY = dg.AssetKey("mobile_status")
PUBLISHED_COLUMNS = (
    "set_id",
    "mobile_raw",
    "mobile",
    "valid",
    "invalid_reason",
    "status_code",
    "status",
    "operator",
    "prefix_operator",
    "ported",
    "order_number",
    "checked_at",
    "source",
)


# --- helpers --------------------------------------------------------------------------


def unknown(mobiles: Iterable[str]) -> list[str]:
    """The numbers the simulator answers "unknown" (never billed, always asked again)."""
    return [m for m in mobiles if truth(m) == Status.UNKNOWN]


def assert_paid_answers_kept(sim: SimulatorServer, db: Path) -> None:
    """Every billed call is in the audit (and nothing else is), and its answer is cached."""
    billed = sim.provider.ledger(billed_only=True)
    audit = query(db, "SELECT order_number, mobile FROM provider_calls WHERE billed")
    assert sorted(audit) == sorted((e.order_number, e.mobile) for e in billed)
    latest = {e.mobile: e.order_number for e in sim.provider.ledger() if e.code == 2000}
    cache = dict(query(db, "SELECT mobile, order_number FROM mobile_status_latest"))
    for entry in billed:
        assert cache.get(entry.mobile) == latest[entry.mobile]


def published(db: Path, set_id: str) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT mobile_raw, mobile, status_code, order_number, source, run_id "
        "FROM mobile_status WHERE set_id = ? ORDER BY ALL",
        [set_id],
    )


def reasons(db: Path, run: RunOutcome) -> collections.Counter[str]:
    """How many numbers ``run`` paid for, by the audit's reason (new, stale, retry, forced)."""
    rows = query(db, "SELECT reason FROM provider_calls WHERE run_id = ?", [run.run_id])
    return collections.Counter(str(r) for (r,) in rows)


def materializations(instance: dg.DagsterInstance) -> list[dg.EventLogRecord]:
    return list(instance.fetch_materializations(ASSET_KEY, limit=1000).records)


def cost_of(metadata: Mapping[str, Any]) -> tuple[Decimal, str]:
    """A partition's cost (a float, so the UI can plot it) and its currency, from metadata."""
    cost = metadata["mobile_status/cost"]
    assert isinstance(cost, float)
    return Decimal(str(cost)), str(metadata["mobile_status/currency"])


# --- incremental: never pay twice -------------------------------------------------------


def test_second_run_asks_again_only_unknown_numbers(simulator: SimulatorServer, db: Path) -> None:
    mobiles = sample_numbers(300)
    assert unknown(mobiles), "the sample must hold numbers the provider answers unknown"
    seed_sets(db, {"a": mobiles})
    first = one_run(run_sets(simulator, db, ["a"]))
    assert first.success, first.message
    assert asked(simulator.provider.ledger()) == sorted(mobiles)
    assert asked(simulator.provider.ledger(billed_only=True)) == sorted(billable(mobiles))

    mark = len(simulator.provider.ledger())
    second = one_run(run_sets(simulator, db, ["a"]))
    assert second.success, second.message
    again = requests_since(simulator, mark)
    assert asked(again) == sorted(unknown(mobiles))
    assert not any(e.billed for e in again)
    assert reasons(db, first) == {"new": 300}
    assert reasons(db, second) == {"retry": len(unknown(mobiles))}
    assert second.metadata["mobile_status/sent_to_provider"] == len(unknown(mobiles))
    assert second.metadata["mobile_status/billed"] == 0
    assert second.metadata["mobile_status/served_from_cache"] == len(billable(mobiles))
    assert query(db, "SELECT count(*) FROM mobile_status WHERE set_id = 'a'") == [(300,)]


def test_adding_ten_numbers_to_a_set_makes_exactly_ten_calls(
    simulator: SimulatorServer, db: Path
) -> None:
    pool = billable(sample_numbers(260))
    base, extra = pool[:200], pool[200:210]
    seed_sets(db, {"a": base})
    assert one_run(run_sets(simulator, db, ["a"])).success

    seed_sets(db, {"a": extra})
    mark = len(simulator.provider.ledger())
    run = one_run(run_sets(simulator, db, ["a"]))
    assert run.success, run.message
    new = requests_since(simulator, mark)
    assert asked(new) == sorted(extra)
    assert all(e.billed for e in new)
    assert reasons(db, run) == {"new": 10}
    assert run.metadata["mobile_status/sent_to_provider"] == 10
    assert run.metadata["mobile_status/billed"] == 10
    assert query(db, "SELECT count(*) FROM mobile_status WHERE set_id = 'a'") == [(210,)]
    assert query(
        db, "SELECT source, count(*) FROM mobile_status WHERE set_id = 'a' GROUP BY ALL ORDER BY 1"
    ) == [("cache", 200), ("provider", 10)]


def test_number_shared_by_two_sets_in_one_run_is_billed_once(
    simulator: SimulatorServer, db: Path
) -> None:
    mobiles = sample_numbers(300)
    seed_sets(db, {"a": mobiles[:200], "b": mobiles[100:]})
    run = one_run(run_sets(simulator, db, ["a", "b"]))
    assert run.success, run.message
    assert asked(simulator.provider.ledger()) == sorted(mobiles)
    assert_nothing_billed_twice(simulator)
    assert run.metadata["mobile_status/run_sent_to_provider"] == 300
    assert run.metadata["mobile_status/run_billed"] == len(billable(mobiles))
    counts = query(db, "SELECT set_id, count(*) FROM mobile_status GROUP BY ALL ORDER BY 1")
    assert counts == [("a", 200), ("b", 200)]
    # The shared numbers carry the same answer in both sets.
    assert query(
        db,
        "SELECT count(*) FROM mobile_status a JOIN mobile_status b USING (mobile) "
        "WHERE a.set_id = 'a' AND b.set_id = 'b' AND a.order_number = b.order_number",
    ) == [(100,)]


def test_number_shared_by_two_sets_across_runs_is_billed_once(
    simulator: SimulatorServer, db: Path
) -> None:
    mobiles = sample_numbers(300)
    a, b = mobiles[:200], mobiles[100:]
    seed_sets(db, {"a": a, "b": b})
    assert one_run(run_sets(simulator, db, ["a"])).success

    mark = len(simulator.provider.ledger())
    run = one_run(run_sets(simulator, db, ["b"]))
    assert run.success, run.message
    # Only b's own numbers, plus the shared ones whose answer was "unknown".
    expected = sorted(set(b) - set(billable(a)))
    assert asked(requests_since(simulator, mark)) == expected
    assert_nothing_billed_twice(simulator)
    shared_billed = set(billable(a)) & set(b)
    sources = dict(
        query(db, "SELECT mobile, source FROM mobile_status WHERE set_id = 'b' AND valid")
    )
    assert {m for m, s in sources.items() if s == "cache"} == shared_billed


# --- freshness ------------------------------------------------------------------------


def test_stale_number_is_asked_again(simulator: SimulatorServer, db: Path) -> None:
    mobiles = billable(sample_numbers(120))
    seed_sets(db, {"a": mobiles})
    assert one_run(run_sets(simulator, db, ["a"])).success

    stale, almost_stale = mobiles[:10], mobiles[10:20]
    backdate(db, stale, 31)
    backdate(db, almost_stale, 29)
    mark = len(simulator.provider.ledger())
    run = one_run(run_sets(simulator, db, ["a"]))
    assert run.success, run.message
    new = requests_since(simulator, mark)
    assert asked(new) == sorted(stale)
    assert all(e.billed for e in new)
    assert reasons(db, run) == {"stale": 10}
    refreshed = query(
        db, "SELECT mobile FROM mobile_status WHERE set_id = 'a' AND source = 'provider'"
    )
    assert sorted(m for (m,) in refreshed) == sorted(stale)


def test_force_refresh_asks_every_number_again(simulator: SimulatorServer, db: Path) -> None:
    mobiles = sample_numbers(150)
    seed_sets(db, {"a": [*mobiles, "abc", None, "12345"], "b": mobiles[:50]})
    assert one_run(run_sets(simulator, db, ["a", "b"])).success

    mark = len(simulator.provider.ledger())
    run = one_run(run_sets(simulator, db, ["a", "b"], force_refresh=True))
    assert run.success, run.message
    new = requests_since(simulator, mark)
    assert asked(new) == sorted(mobiles)  # every valid number, once, invalid ones never
    assert reasons(db, run) == {"forced": len(mobiles)}
    assert run.metadata["mobile_status/run_billed"] == len(billable(mobiles))
    assert query(db, "SELECT DISTINCT source FROM mobile_status WHERE valid ORDER BY 1") == [
        ("provider",)
    ]

    # The refreshed answers are fresh again: the next ordinary run pays for nothing.
    mark = len(simulator.provider.ledger())
    assert one_run(run_sets(simulator, db, ["a", "b"])).success
    assert asked(requests_since(simulator, mark)) == sorted(unknown(mobiles))


def test_freshness_overrides_per_status(simulator: SimulatorServer, db: Path) -> None:
    mobiles = sample_numbers(300)
    vacant = [m for m in mobiles if truth(m) == Status.VACANT]
    online = [m for m in mobiles if truth(m) == Status.ONLINE]
    assert vacant
    assert online
    freshness = Freshness(
        max_age=timedelta(days=5),
        by_status={Status.VACANT: timedelta(days=1), Status.ONLINE: timedelta(days=60)},
    )
    built = build_mobile_status_assets(freshness=freshness)
    seed_sets(db, {"a": mobiles})
    assert one_run(run_sets(simulator, db, ["a"], built=built)).success

    # Two days old: only the vacant answers (1 day) are stale.
    backdate(db, mobiles, 2)
    mark = len(simulator.provider.ledger())
    assert one_run(run_sets(simulator, db, ["a"], built=built)).success
    assert asked(requests_since(simulator, mark)) == sorted(vacant + unknown(mobiles))

    # Ten days old: everything but the online answers (60 days) is stale.
    backdate(db, mobiles, 10)
    mark = len(simulator.provider.ledger())
    assert one_run(run_sets(simulator, db, ["a"], built=built)).success
    assert asked(requests_since(simulator, mark)) == sorted(set(mobiles) - set(online))


# --- the audit ------------------------------------------------------------------------


def test_audit_reconciles_exactly_with_the_providers_ledger(
    simulator: SimulatorServer, db: Path
) -> None:
    mobiles = sample_numbers(300)
    seed_sets(db, {"a": mobiles[:200], "b": mobiles[150:]})
    first = one_run(run_sets(simulator, db, ["a"]))
    second = one_run(run_sets(simulator, db, ["b"], unit_price="0.0375", currency="USD"))
    assert first.success, first.message
    assert second.success, second.message

    ledger = simulator.provider.ledger()
    audit = query(
        db,
        "SELECT order_number, mobile, provider_code, status_code, operator, billed, "
        "possibly_billed, unit_price, currency, run_id FROM provider_calls",
    )
    # One audit row per request the provider saw, none extra.
    assert len(audit) == len(ledger)
    assert sorted(str(row[1]) for row in audit) == asked(ledger)
    # Billed calls: the same order numbers on both sides, each once.
    billed_audit = {row[0]: row for row in audit if row[5]}
    billed_ledger = {e.order_number: e for e in ledger if e.billed}
    assert len(billed_audit) == sum(1 for row in audit if row[5])
    assert set(billed_audit) == set(billed_ledger)
    for order_number, entry in billed_ledger.items():
        row = billed_audit[order_number]
        assert (row[1], row[2], row[3], row[4]) == (
            entry.mobile,
            entry.code,
            entry.check,
            entry.operator,
        )
    # Unbilled answers ("unknown") are audited as such.
    unbilled = {row[0] for row in audit if not row[5]}
    assert unbilled == {e.order_number for e in ledger if not e.billed}
    assert not any(row[6] for row in audit)

    # The price in force is recorded with every call; cost = billed x price, exactly.
    prices = {first.run_id: (Decimal(PRICE), "CNY"), second.run_id: (Decimal("0.0375"), "USD")}
    for run in (first, second):
        price, currency = prices[run.run_id]
        rows = [row for row in audit if row[9] == run.run_id]
        assert rows
        assert {(row[7], row[8]) for row in rows} == {(price, currency)}
        assert all(isinstance(row[7], Decimal) for row in rows)
        billed = sum(1 for row in rows if row[5])
        assert run.metadata["mobile_status/billed"] == billed
        assert cost_of(run.metadata) == (price * billed, currency)
        (total,) = query(
            db,
            "SELECT sum(unit_price) FROM provider_calls WHERE billed AND run_id = ?",
            [run.run_id],
        )[0]
        assert total == price * billed
    assert second.metadata["mobile_status/billed"] == len(billable(set(mobiles[200:])))


# --- the published table ----------------------------------------------------------------


def _spellings(mobile: str) -> list[str]:
    n = mobile
    return [
        f"+86 {n[:3]}-{n[3:7]}-{n[7:]}",
        f"0086{n}",
        f"86{n}",
        f"{n}.0",
        f"({n[:3]}) {n[3:7]} {n[7:]}",
        f"{n[:3]}.{n[3:7]}.{n[7:]}",
        f" {n}\t",
        n.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
    ]


INVALID_INPUTS: list[tuple[str | None, str]] = [
    ("abc", "not_digits"),
    ("", "empty"),
    (None, "empty"),
    ("12345", "wrong_length"),
    ("010-12345678", "not_mobile"),  # a Beijing landline: 11 digits
    ("1391234567", "wrong_length"),
    ("+1 415 555 0100", "not_mainland"),
    ("12912345678", "not_mobile"),
    ("14012345678", "unallocated"),
]


def test_published_table_has_one_row_per_input_row(simulator: SimulatorServer, db: Path) -> None:
    plain = sample_numbers(200, seed=11)
    special = ["17051234567", "17101234567", "19212345678"]  # virtual operators, Broadnet
    messy = sample_numbers(8, seed=12)
    rows: list[tuple[str | None, str | None, str | None]] = []  # raw, mobile, reason
    rows += [(m, m, None) for m in plain + special]
    rows += [(raw, m, None) for m in messy for raw in _spellings(m)]
    rows += [(plain[0], plain[0], None)]  # the same number twice in a set
    rows += [(raw, None, reason) for raw, reason in INVALID_INPUTS]
    seed_sets(db, {"s": [raw for raw, _, _ in rows]})
    run = one_run(run_sets(simulator, db, ["s"]))
    assert run.success, run.message

    columns = [c for (c,) in query(db, "SELECT column_name FROM (DESCRIBE mobile_status)")]
    assert set(PUBLISHED_COLUMNS) <= set(columns)
    table = query(db, f"SELECT {', '.join(PUBLISHED_COLUMNS)} FROM mobile_status")
    assert len(table) == len(rows)
    got = sorted((r[1] or "", r[2] or "", r[4] or "") for r in table)
    assert got == sorted((raw or "", m or "", reason or "") for raw, m, reason in rows)

    answers = {e.mobile: e for e in simulator.provider.ledger() if e.code == 2000}
    ported = 0
    for row in table:
        record = dict(zip(PUBLISHED_COLUMNS, row, strict=True))
        assert record["set_id"] == "s"
        mobile = record["mobile"]
        if mobile is None:
            assert record["valid"] is False
            assert record["invalid_reason"] is not None
            assert record["source"] == "invalid"
            assert record["status_code"] is None
            assert record["order_number"] is None
            continue
        check, operator = number_truth(mobile)
        prefix = numbers.prefix_operator(mobile)
        assert record["valid"] is True
        assert record["invalid_reason"] is None
        assert record["status_code"] == check
        assert record["status"] == Status(check).label
        assert record["operator"] == operator
        assert record["prefix_operator"] == (prefix.value if prefix else None)
        assert record["ported"] == numbers.is_ported(operator, mobile)
        assert record["order_number"] == answers[mobile].order_number
        assert isinstance(record["checked_at"], datetime)
        assert record["source"] == "provider"
        ported += bool(record["ported"])
    assert ported > 0, "the sample must hold ported numbers"
    prefixes = dict(query(db, "SELECT mobile, prefix_operator FROM mobile_status WHERE valid"))
    assert prefixes["17051234567"] == "VNO"
    assert prefixes["19212345678"] == "CBN"
    assert query(db, "SELECT ported FROM mobile_status WHERE mobile = '19212345678'") == [(None,)]

    # A second run serves the same rows from the cache (unknown answers asked again).
    assert one_run(run_sets(simulator, db, ["s"])).success
    sources = query(db, "SELECT source, count(*) FROM mobile_status GROUP BY ALL ORDER BY 1")
    unknown_rows = sum(1 for _, m, _ in rows if m is not None and truth(m) == 0)
    valid_rows = sum(1 for _, m, _ in rows if m is not None)
    expected = {"cache": valid_rows - unknown_rows, "invalid": len(INVALID_INPUTS)}
    if unknown_rows:
        expected["provider"] = unknown_rows
    assert dict(sources) == expected


# --- fatal provider errors ----------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[SimulatorServer, contextlib.ExitStack], object]  # undone on the stack
    clear: Callable[[SimulatorServer], object]
    message: tuple[str, ...]
    billed: Callable[[int], bool]  # billed in the failed run, given the numbers to send


FAULTS = [
    Fault(
        "token-revoked-mid-run",
        lambda sim, stack: stack.enter_context(revoke_token_after(sim, 40)),
        lambda sim: sim.provider.update_config(token=DEMO_TOKEN),
        ("4001", settings.TOKEN),
        lambda n: 0 < n < 150,
    ),
    Fault(
        "token-invalid-from-start",
        lambda sim, _: sim.provider.update_config(token=ROTATED_TOKEN),
        lambda sim: sim.provider.update_config(token=DEMO_TOKEN),
        ("4001", settings.TOKEN),
        lambda n: n == 0,
    ),
    Fault(
        "balance-spent",
        lambda sim, _: sim.provider.update_config(balance=25),
        lambda sim: sim.provider.update_config(balance=None),
        ("4002", "Top up"),
        lambda n: n == 25,
    ),
    Fault(
        "service-disabled",
        lambda sim, _: sim.provider.update_config(disabled=True),
        lambda sim: sim.provider.update_config(disabled=False),
        ("4004", "Enable"),
        lambda n: n == 0,
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fatal_provider_error_stops_the_run_and_a_rerun_pays_only_for_the_rest(
    simulator: SimulatorServer, db: Path, fault: Fault
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    pool = sample_numbers(400)
    old, new = pool[:100], billable(pool[100:])[:150]
    assert len(new) == 150
    seed_sets(db, {"a": old})
    assert one_run(run_sets(simulator, db, ["a"], instance=instance)).success
    before = published(db, "a")

    seed_sets(db, {"a": new})
    with contextlib.ExitStack() as injected:
        fault.inject(simulator, injected)
        mark = len(simulator.provider.ledger(billed_only=True))
        failed = one_run(run_sets(simulator, db, ["a"], instance=instance))

    assert not failed.success
    assert failed.message is not None
    for text in (*fault.message, "not published", "rerun"):
        assert text in failed.message
    assert DEMO_TOKEN not in failed.message
    assert fault.billed(len(simulator.provider.ledger(billed_only=True)) - mark)
    assert_paid_answers_kept(simulator, db)
    assert published(db, "a") == before  # the unfinished partition is not published
    assert failed.metadata == {}
    assert failed.run_id not in {r.run_id for r in materializations(instance)}

    fault.clear(simulator)
    paid_before_rerun = {e.mobile for e in simulator.provider.ledger(billed_only=True)}
    rerun = one_run(run_sets(simulator, db, ["a"], instance=instance))
    assert rerun.success, rerun.message
    assert_nothing_billed_twice(simulator)
    assert rerun.metadata["mobile_status/billed"] == len(set(new) - paid_before_rerun)
    billed_now = asked(simulator.provider.ledger(billed_only=True))
    assert billed_now == sorted(billable(old) + new)
    assert query(db, "SELECT count(*) FROM mobile_status WHERE set_id = 'a'") == [(250,)]
    assert_paid_answers_kept(simulator, db)


def test_multi_set_run_stopped_by_balance_publishes_only_finished_sets(
    simulator: SimulatorServer, db: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    mobiles = sample_numbers(240)
    a, b, c = mobiles[:100], mobiles[80:180], mobiles[160:]
    seed_sets(db, {"a": a, "b": b, "c": c})
    # One number in flight at a time: set a's numbers go first, then b's.
    simulator.provider.update_config(balance=len(billable(a)) + 3)
    failed = one_run(run_sets(simulator, db, ["a", "b", "c"], instance=instance, max_concurrency=1))
    assert not failed.success
    assert failed.message is not None
    assert "4002" in failed.message
    assert "b, c" in failed.message
    assert query(db, "SELECT DISTINCT set_id FROM mobile_status") == [("a",)]
    from_failed_run = [r for r in materializations(instance) if r.run_id == failed.run_id]
    assert [r.partition_key for r in from_failed_run] == ["a"]
    assert_paid_answers_kept(simulator, db)

    simulator.provider.update_config(balance=None)
    rerun = one_run(run_sets(simulator, db, ["a", "b", "c"], instance=instance))
    assert rerun.success, rerun.message
    assert_nothing_billed_twice(simulator)
    assert asked(simulator.provider.ledger(billed_only=True)) == sorted(billable(mobiles))
    assert query(db, "SELECT set_id, count(*) FROM mobile_status GROUP BY ALL ORDER BY 1") == [
        ("a", 100),
        ("b", 100),
        ("c", 80),
    ]


def test_budget_stops_the_run_and_the_rerun_completes(simulator: SimulatorServer, db: Path) -> None:
    mobiles = sample_numbers(120)
    seed_sets(db, {"a": mobiles})
    failed = one_run(run_sets(simulator, db, ["a"], max_billed=20))
    assert not failed.success
    assert failed.message is not None
    assert "budget" in failed.message
    assert len(simulator.provider.ledger(billed_only=True)) <= 20
    assert query(db, "SELECT count(*) FROM mobile_status") == [(0,)]
    assert_paid_answers_kept(simulator, db)

    assert one_run(run_sets(simulator, db, ["a"])).success
    assert_nothing_billed_twice(simulator)
    assert len(simulator.provider.ledger(billed_only=True)) == len(billable(mobiles))


# --- metadata ---------------------------------------------------------------------------


def test_materialization_metadata_reports_usage_and_cost(
    simulator: SimulatorServer, db: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    mobiles = sample_numbers(200)
    seed_sets(db, {"a": [*mobiles, "abc", "12345", None]})
    run = one_run(run_sets(simulator, db, ["a"], instance=instance))
    assert run.success, run.message

    meta = run.metadata
    billed = len(billable(mobiles))
    histogram = collections.Counter(Status(truth(m)).label for m in mobiles)
    assert meta["dagster/row_count"] == 203
    assert meta["mobile_status/numbers"] == 200  # distinct valid numbers
    assert meta["mobile_status/invalid"] == 3
    assert meta["mobile_status/sent_to_provider"] == 200
    assert meta["mobile_status/run_sent_to_provider"] == 200
    assert meta["mobile_status/run_attempts"] == 200
    assert meta["mobile_status/billed"] == billed
    assert meta["mobile_status/run_billed"] == billed
    assert meta["mobile_status/possibly_billed"] == 0
    assert meta["mobile_status/served_from_cache"] == 0
    assert cost_of(meta) == (Decimal(PRICE) * billed, "CNY")
    assert meta["mobile_status/status_histogram"] == dict(histogram)
    assert isinstance(meta["mobile_status/calls_per_second"], float)
    assert meta["mobile_status/calls_per_second"] > 0
    assert isinstance(meta["mobile_status/latency_p50_ms"], float)
    assert isinstance(meta["mobile_status/latency_p95_ms"], float)
    assert DEMO_TOKEN not in repr(meta)
    # Every figure is a number (the UI plots numbers across materializations).
    text = {"mobile_status/currency"}
    structured = {k for k in meta if k.endswith("_histogram")}
    for key, value in meta.items():
        assert key.startswith(("dagster/", "mobile_status/")), key
        if key not in text | structured:
            assert isinstance(value, int | float), (key, value)
    assert run.usage.billed == billed
    assert run.usage.run_cost == float(Decimal(PRICE) * billed)

    # The same metadata is on the partition's materialization in the instance.
    (record,) = materializations(instance)
    assert record.partition_key == "a"
    assert record.asset_materialization is not None
    stored = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert stored["dagster/row_count"] == 203
    assert stored["mobile_status/billed"] == billed

    again = one_run(run_sets(simulator, db, ["a"], instance=instance))
    assert again.metadata["dagster/row_count"] == 203
    assert again.metadata["mobile_status/served_from_cache"] == billed
    assert again.metadata["mobile_status/sent_to_provider"] == len(unknown(mobiles))
    assert again.metadata["mobile_status/billed"] == 0
    assert cost_of(again.metadata) == (Decimal(0), "CNY")


def test_multi_partition_run_gives_each_partition_its_own_row_count(
    simulator: SimulatorServer, db: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    mobiles = sample_numbers(90)
    seed_sets(db, {"a": mobiles[:40], "b": mobiles[30:70], "c": mobiles[60:]})
    run = one_run(run_sets(simulator, db, ["a", "b", "c"], instance=instance))
    assert run.success, run.message
    rows = dict(query(db, "SELECT set_id, count(*) FROM mobile_status GROUP BY ALL"))
    records = [r for r in materializations(instance) if r.run_id == run.run_id]
    assert {r.partition_key for r in records} == {"a", "b", "c"}
    for record in records:
        assert record.asset_materialization is not None
        row_count = record.asset_materialization.metadata["dagster/row_count"].value
        assert row_count == rows[record.partition_key], record.partition_key


# --- partitions, sensor, backfill policy ----------------------------------------------------


def test_multi_partition_run_is_one_dagster_run_deduplicated_across_sets(
    simulator: SimulatorServer, db: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    mobiles = sample_numbers(200)
    seed_sets(db, {"a": mobiles[:100], "b": mobiles[50:150], "c": mobiles[100:]})
    run = one_run(run_sets(simulator, db, ["a", "b", "c"], instance=instance))
    assert run.success, run.message
    assert run.set_ids == ("a", "b", "c")
    dagster_run = instance.get_run_by_id(run.run_id)
    assert dagster_run is not None
    assert dagster_run.tags[ASSET_PARTITION_RANGE_START_TAG] == "a"
    assert dagster_run.tags[ASSET_PARTITION_RANGE_END_TAG] == "c"
    assert asked(simulator.provider.ledger()) == sorted(mobiles)
    assert run.metadata["mobile_status/run_sent_to_provider"] == 200
    records = [r for r in materializations(instance) if r.run_id == run.run_id]
    assert sorted(str(r.partition_key) for r in records) == ["a", "b", "c"]
    assert query(db, "SELECT set_id, count(*) FROM mobile_status GROUP BY ALL ORDER BY 1") == [
        ("a", 100),
        ("b", 100),
        ("c", 100),
    ]


def test_sets_that_are_not_adjacent_run_separately_and_share_the_cache(
    simulator: SimulatorServer, db: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    mobiles = sample_numbers(150)
    seed_sets(db, {"a": mobiles[:100], "b": mobiles[100:], "c": mobiles[50:]})
    instance.add_dynamic_partitions(DEFAULT_PARTITIONS_NAME, ["a", "b", "c"])
    runs = run_sets(simulator, db, ["a", "c"], instance=instance)
    assert [r.set_ids for r in runs] == [("a",), ("c",)]
    assert all(r.success for r in runs)
    assert_nothing_billed_twice(simulator)
    assert len(simulator.provider.ledger(billed_only=True)) == len(billable(mobiles))


def test_asset_backfill_policy_and_pool() -> None:
    built = build_mobile_status_assets()
    assert built.enrichment.backfill_policy == dg.BackfillPolicy.single_run()
    assert built.enrichment.op.pool == PROVIDER_POOL == "mobile_status_provider"
    assert isinstance(built.partitions_def, dg.DynamicPartitionsDefinition)
    assert built.partitions_def.name == DEFAULT_PARTITIONS_NAME
    capped = build_mobile_status_assets(max_partitions_per_run=4, pool="provider_b")
    assert capped.enrichment.backfill_policy == dg.BackfillPolicy.multi_run(4)
    assert capped.enrichment.op.pool == "provider_b"


def _sensor(built: MobileStatusAssets, sim: SimulatorServer, db: Path) -> dg.SensorDefinition:
    defs = dg.Definitions.merge(built.definitions, dg.Definitions(resources=resources(sim, db)))
    return defs.resolve_sensor_def(NEW_SETS_SENSOR)


def _evaluate(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, db: Path) -> Any:
    context = dg.build_sensor_context(
        instance=instance, resources={"duckdb": DuckDBResource(database=str(db))}
    )
    return sensor(context)


def _added_keys(result: object) -> list[str]:
    """The set ids a sensor evaluation asks to add (empty when it skipped)."""
    assert isinstance(result, dg.SensorResult)
    assert not result.run_requests  # registering a set costs nothing; enriching it does
    keys: list[str] = []
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        assert request.partitions_def_name == DEFAULT_PARTITIONS_NAME
        keys += request.partition_keys
    if not keys:
        assert result.skip_reason is not None
    return keys


def test_sensor_adds_a_partition_per_new_set_and_skips_when_none_are_new(
    simulator: SimulatorServer, db: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    sensor = _sensor(build_mobile_status_assets(), simulator, db)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    assert _added_keys(_evaluate(sensor, instance, db)) == []  # no source table yet

    seed_sets(db, {"b": sample_numbers(3), "a": sample_numbers(3, seed=1)})
    added = _added_keys(_evaluate(sensor, instance, db))
    assert added == ["a", "b"]
    instance.add_dynamic_partitions(DEFAULT_PARTITIONS_NAME, added)

    assert _added_keys(_evaluate(sensor, instance, db)) == []  # nothing new: skipped

    seed_sets(db, {"c": sample_numbers(3, seed=2), "a": sample_numbers(2, seed=3)})
    assert _added_keys(_evaluate(sensor, instance, db)) == ["c"]
    assert simulator.provider.ledger() == []


# --- time-window partitions -------------------------------------------------------------


def test_daily_partitions_over_a_time_column(simulator: SimulatorServer, db: Path) -> None:
    mobiles = sample_numbers(90, seed=5)
    day1, day2 = mobiles[:60], mobiles[30:]
    midnight2 = datetime(2026, 1, 2, tzinfo=UTC)
    rows = [(m, datetime(2026, 1, 1, 8, tzinfo=UTC)) for m in day1]
    rows += [(m, midnight2 + timedelta(hours=9)) for m in day2[1:]]
    rows += [(day2[0], midnight2)]  # the window's start belongs to it
    rows += [("abc", midnight2 + timedelta(hours=1))]
    rows += [(sample_numbers(1, seed=6)[0], datetime(2026, 1, 3, tzinfo=UTC))]  # next day
    with duckdb.connect(str(db)) as conn:
        conn.execute("CREATE TABLE daily_drops (mobile VARCHAR, loaded_at TIMESTAMPTZ)")
        conn.executemany("INSERT INTO daily_drops VALUES (?, ?)", rows)
    built = build_mobile_status_assets(
        source_table="daily_drops",
        set_column=None,
        time_column="loaded_at",
        partitions_def=dg.DailyPartitionsDefinition(start_date="2026-01-01"),
    )
    sensors = [sensor.name for sensor in built.definitions.sensors or []]
    assert sensors == [AUTOMATION_SENSOR]  # no sets to discover, only the automation
    instance = dg.DagsterInstance.ephemeral()

    def materialize(day: str) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [built.enrichment],
            partition_key=day,
            resources=resources(simulator, db),
            instance=instance,
            raise_on_error=False,
        )

    assert materialize("2026-01-01").success
    assert asked(simulator.provider.ledger()) == sorted(day1)
    mark = len(simulator.provider.ledger())
    second = materialize("2026-01-02")
    assert second.success
    # A number seen on both days is paid once.
    assert asked(requests_since(simulator, mark)) == sorted(set(day2) - set(billable(day1)))
    assert_nothing_billed_twice(simulator)
    counts = query(db, "SELECT set_id, count(*) FROM mobile_status GROUP BY ALL ORDER BY 1")
    assert counts == [("2026-01-01", 60), ("2026-01-02", 61)]
    (record,) = second.get_asset_materialization_events()
    assert record.partition == "2026-01-02"
    assert record.materialization.metadata["dagster/row_count"].value == 61


# --- configuration ----------------------------------------------------------------------


def test_default_definitions_load_with_assets_sensor_and_resources() -> None:
    from mobile_status_dagster.integration.definitions import defs

    assert ASSET_KEY in defs.resolve_all_asset_keys()
    assert defs.resolve_assets_def(ASSET_KEY).partitions_def is not None
    assert defs.resolve_sensor_def(NEW_SETS_SENSOR).name == NEW_SETS_SENSOR
    resources = dict(defs.resources or {})
    assert {"mobile_status_api", "duckdb"} <= set(resources)
    assert DEMO_TOKEN not in repr(resources["mobile_status_api"])


def _validate_workspace(env_changes: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``dagster definitions validate`` on the repository's ``workspace.yaml``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOBILE_STATUS_", "DAGSTER"))}
    env |= env_changes
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        cwd=cwd,  # dagster keeps a temporary instance in the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_workspace_loads_and_malformed_settings_fail_the_load_naming_the_variable(
    tmp_path: Path,
) -> None:
    cases: dict[str, dict[str, str]] = {
        "ok": {settings.DB: str(tmp_path / "x.duckdb")},
        settings.QPS: {settings.QPS: "fast"},
        settings.UNIT_PRICE: {settings.UNIT_PRICE: "5 fen"},
        settings.BASE_URL: {settings.BASE_URL: "ftp://example.com"},
    }
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        futures = {
            name: pool.submit(_validate_workspace, env, tmp_path) for name, env in cases.items()
        }
        results = {name: future.result() for name, future in futures.items()}
    ok = results.pop("ok")
    assert ok.returncode == 0, ok.stderr[-2000:]
    for variable, result in results.items():
        assert result.returncode != 0, variable
        assert f"ConfigurationError: {variable}:" in result.stdout + result.stderr, variable


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        (settings.QPS, "fast"),
        (settings.QPS, "-1"),
        (settings.UNIT_PRICE, "abc"),
        (settings.UNIT_PRICE, "-0.05"),
        (settings.BASE_URL, "not a url"),
        (settings.MAX_CONCURRENCY, "0"),
    ],
)
def test_malformed_setting_is_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        build_default_definitions(settings.DeploymentSettings.from_env({variable: value}))


def _deployment(db: Path) -> settings.DeploymentSettings:
    return settings.DeploymentSettings(
        db=str(db), max_concurrency=8, qps=None, unit_price=PRICE, timeout_s=5.0
    )


def test_missing_token_fails_at_run_start_naming_the_variable(
    simulator: SimulatorServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_sets(db, {"a": sample_numbers(20)})
    monkeypatch.setenv(settings.BASE_URL, simulator.base_url)
    monkeypatch.delenv(settings.TOKEN, raising=False)
    with pytest.raises(dg.DagsterInvalidConfigError, match=settings.TOKEN):
        materialize_sets(
            build_mobile_status_assets(),
            resources=default_resources(_deployment(db)),
            instance=dg.DagsterInstance.ephemeral(),
            set_ids=["a"],
            log_level="CRITICAL",
        )
    assert simulator.provider.ledger() == []


def test_token_from_the_environment_never_reaches_logs_metadata_or_tables(
    simulator: SimulatorServer, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_sets(db, {"a": sample_numbers(30)})
    monkeypatch.setenv(settings.BASE_URL, simulator.base_url)
    monkeypatch.setenv(settings.TOKEN, DEMO_TOKEN)
    instance = dg.DagsterInstance.ephemeral()
    (run,) = materialize_sets(
        build_mobile_status_assets(),
        resources=default_resources(_deployment(db)),
        instance=instance,
        set_ids=["a"],
        log_level="DEBUG",
    )
    assert run.success, run.message
    dagster_run = instance.get_run_by_id(run.run_id)
    stored = repr(dagster_run) + "".join(repr(e) for e in instance.all_logs(run.run_id))
    assert DEMO_TOKEN not in stored
    assert DEMO_TOKEN not in repr(run.metadata)
    for table in ("provider_calls", "mobile_status", "mobile_status_latest"):
        dump = repr(query(db, f"SELECT * FROM {table}"))
        assert DEMO_TOKEN not in dump


BAD_RESOURCE_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"max_concurrency": -1}, "max_concurrency"),
    ({"unit_price": "abc"}, "unit_price"),
    ({"unit_price": "-0.05"}, "unit_price"),
    ({"qps": 0.0}, "qps"),
    ({"timeout_s": -5.0}, "timeout_s"),
    ({"base_url": "ftp://example.com"}, "base_url"),
    ({"max_billed_per_run": -1}, "max_billed_per_run"),
]
BAD_RESOURCE_IDS = [
    ",".join(f"{k}={v}" for k, v in api.items()) for api, _ in BAD_RESOURCE_SETTINGS
]


def _failure_texts(instance: dg.DagsterInstance, run_id: str) -> str:
    texts = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if error is not None:
            texts.append(error.to_string())
    return "\n".join(texts)


@pytest.mark.parametrize(("api", "setting"), BAD_RESOURCE_SETTINGS, ids=BAD_RESOURCE_IDS)
def test_bad_resource_config_fails_before_any_provider_call(
    simulator: SimulatorServer, db: Path, api: dict[str, Any], setting: str
) -> None:
    seed_sets(db, {"a": sample_numbers(20)})
    instance = dg.DagsterInstance.ephemeral()
    run = one_run(run_sets(simulator, db, ["a"], instance=instance, **api))
    assert not run.success
    assert simulator.provider.ledger() == []
    assert f"ConfigurationError: {setting}:" in _failure_texts(instance, run.run_id)
    assert query(db, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'mobile_status'") in (
        [(0,)],
        [(1,)],
    )
    tables = {t for (t,) in query(db, "SELECT table_name FROM duckdb_tables()")}
    if "mobile_status" in tables:
        assert query(db, "SELECT count(*) FROM mobile_status") == [(0,)]


@pytest.mark.parametrize(("api", "setting"), BAD_RESOURCE_SETTINGS[:2], ids=BAD_RESOURCE_IDS[:2])
def test_bad_resource_config_run_outcome_names_the_setting(
    simulator: SimulatorServer, db: Path, api: dict[str, Any], setting: str
) -> None:
    seed_sets(db, {"a": sample_numbers(5)})
    run = one_run(run_sets(simulator, db, ["a"], **api))
    assert not run.success
    assert run.message is not None
    assert setting in run.message


# --- identifiers and values ------------------------------------------------------------


def test_quoted_identifiers_and_bound_set_ids(simulator: SimulatorServer, db: Path) -> None:
    hostile = "o'brien; drop table x"
    quoted = 'it\'s "quoted"'
    mobiles = sample_numbers(60)
    with duckdb.connect(str(db)) as conn:
        conn.execute('CREATE SCHEMA "raw data"')
        conn.execute(
            'CREATE TABLE "raw data"."my ""numbers"" table" '
            '("set id" VARCHAR, "mobile ""raw""" VARCHAR, x INTEGER)'
        )
        conn.execute("CREATE TABLE x (keep INTEGER)")
        rows = [(hostile, m) for m in mobiles[:30]]
        rows += [(quoted, m) for m in mobiles[20:]]
        rows += [("plain", m) for m in mobiles[:5]]
        conn.executemany('INSERT INTO "raw data"."my ""numbers"" table" VALUES (?, ?, 1)', rows)
    built = build_mobile_status_assets(
        source_table='raw data.my "numbers" table',
        set_column="set id",
        mobile_column='mobile "raw"',
    )
    instance = dg.DagsterInstance.ephemeral()
    sensor = _sensor(built, simulator, db)
    added = _added_keys(_evaluate(sensor, instance, db))
    assert sorted(added) == sorted([hostile, quoted, "plain"])

    run = one_run(run_sets(simulator, db, [hostile, quoted], instance=instance, built=built))
    assert run.success, run.message
    counts = query(db, "SELECT set_id, count(*) FROM mobile_status GROUP BY ALL ORDER BY 1")
    assert counts == sorted([(hostile, 30), (quoted, 40)])
    assert query(db, "SELECT count(*) FROM x") == [(0,)]  # table x survived
    assert query(db, 'SELECT count(*) FROM "raw data"."my ""numbers"" table"') == [(75,)]
    assert asked(simulator.provider.ledger()) == sorted(mobiles)


def test_missing_source_column_fails_naming_the_setting(
    simulator: SimulatorServer, db: Path
) -> None:
    seed_sets(db, {"a": sample_numbers(5)})
    built = build_mobile_status_assets(mobile_column="phone")
    run = one_run(run_sets(simulator, db, ["a"], built=built))
    assert not run.success
    assert run.message is not None
    assert "mobile_column" in run.message
    assert "phone" in run.message
    assert simulator.provider.ledger() == []
