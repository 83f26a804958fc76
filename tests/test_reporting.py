"""Reporting, checks, automation, estimates, budgets and the reporting commands.

Real Dagster runs against the simulator on loopback and a DuckDB file per test. What the
provider's ledger saw is the reference for every count and every amount of money.
"""

from __future__ import annotations

import collections
import contextvars
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus,
)
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.cli.commands import STATUS_COLUMNS, print_report
from mobile_status_dagster.core import numbers
from mobile_status_dagster.core.engine.estimate import CostEstimate, estimate_cost
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store.connection import file_connect
from mobile_status_dagster.core.store.schema import CHARGES, SUMMARY
from mobile_status_dagster.core.store.source import Partition, SourceTable
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import (
    DEFAULT_PARTITIONS_NAME,
    MobileStatusAssets,
    build_mobile_status_assets,
)
from mobile_status_dagster.integration.automation import STALE_SCHEDULE
from mobile_status_dagster.integration.resources import MobileStatusResource
from mobile_status_dagster.simulator import (
    DEMO_TOKEN,
    LedgerEntry,
    SimulatorConfig,
    SimulatorServer,
    number_truth,
)
from tests.support import (
    PRICE,
    asked,
    assert_nothing_billed_twice,
    backdate,
    base_env,
    billable,
    numbers_with_status,
    one_run,
    query,
    requests_since,
    resources,
    run_cli,
    run_sets,
    sample_numbers,
    seed_sets,
    truth,
)

CHECKS = ("coverage", "audit_reconciliation", "no_double_billing")
INVALID = ["abc", "12345", None, "14012345678"]  # not digits, short, empty, unallocated


# --- helpers --------------------------------------------------------------------------


def expected_cost(entries: Sequence[LedgerEntry], price: str) -> Decimal:
    """What the billed entries cost at ``price``, exactly."""
    return Decimal(price) * sum(1 for e in entries if e.billed)


def placeholder_api() -> MobileStatusResource:
    """A provider resource for runs that never call the provider (checks, reports)."""
    return MobileStatusResource(base_url="http://127.0.0.1:9", token=DEMO_TOKEN)


def reports_and_checks(
    db: Path, instance: dg.DagsterInstance, built: MobileStatusAssets
) -> dg.ExecuteInProcessResult:
    """Materialize the summary and the charges and evaluate the three checks, via Dagster."""
    return dg.materialize(
        [built.enrichment, *built.reporting, *built.checks],
        instance=instance,
        resources={
            "mobile_status_api": placeholder_api(),
            "duckdb": DuckDBResource(database=str(db)),
        },
        selection=dg.AssetSelection.assets(*built.reporting)
        | dg.AssetSelection.checks(*built.checks),
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )


def evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    found = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert sorted(found) == sorted(CHECKS)
    return found


def materialized(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    """The metadata values of ``key``'s one materialization in ``result``."""
    events = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)
    ]
    assert len(events) == 1, events
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


def md_rows(table: str) -> list[list[str]]:
    """The cells of a markdown table's lines (header first, separator dropped)."""
    lines = [line.strip() for line in table.strip().splitlines()]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [rows[0], *rows[2:]]


def expected_summary(sets: dict[str, list[str | None]]) -> collections.Counter[tuple[Any, ...]]:
    """``(set, status, operator, ported) -> rows`` from the simulator's truth."""
    counts: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for set_id, raws in sets.items():
        for raw in raws:
            mobile = numbers.normalize(raw).mobile
            if mobile is None:
                counts[(set_id, "invalid", None, None)] += 1
                continue
            check, operator = number_truth(mobile)
            counts[
                (set_id, Status(check).label, operator, numbers.is_ported(operator, mobile))
            ] += 1
    return counts


# --- charges --------------------------------------------------------------------------


def test_charges_equal_the_ledger_per_set_and_run(simulator: SimulatorServer, db: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    built = build_mobile_status_assets()
    pool = sample_numbers(220)
    (unknown,) = numbers_with_status(0, 1)
    first_a = [*pool[:100], unknown]
    shared = billable(first_a)[0]
    more_a = pool[100:120]
    b = [*pool[120:220], shared, unknown]  # one billed number and one unknown in both sets
    seed_sets(db, {"a": first_a, "b": b})

    run1 = one_run(run_sets(simulator, db, ["a"], instance=instance, built=built))
    assert run1.success, run1.message
    result = reports_and_checks(db, instance, built)
    assert result.success
    ledger1 = simulator.provider.ledger()
    assert asked(ledger1) == sorted(first_a)

    seed_sets(db, {"a": more_a})
    price2 = "0.0375"
    run2 = one_run(
        run_sets(
            simulator,
            db,
            ["a", "b"],
            instance=instance,
            built=built,
            unit_price=price2,
            currency="USD",
        )
    )
    assert run2.success, run2.message
    result = reports_and_checks(db, instance, built)
    assert result.success
    ledger2 = requests_since(simulator, len(ledger1))
    # Run 2 asks a's new numbers, b's own numbers and a's unknown ones again (the shared
    # one is charged to a, the first set holding it); the shared billed number is cached.
    unknown_a = [m for m in first_a if truth(m) == Status.UNKNOWN]
    assert unknown in unknown_a
    assert asked(ledger2) == sorted([*more_a, *pool[120:220], *unknown_a])
    assert shared not in asked(ledger2)

    members = {"a": set(first_a) | set(more_a), "b": set(b)}

    def charged_to(mobile: str) -> str:
        return min(s for s, m in members.items() if mobile in m)

    # (set, run, UTC day) -> (currency, calls, billed, possibly billed, cost), per the ledger.
    expected: dict[tuple[str, str, date], tuple[Any, ...]] = {}
    for run, entries, price, currency in (
        (run1, ledger1, Decimal(PRICE), "CNY"),
        (run2, ledger2, Decimal(price2), "USD"),
    ):
        groups: dict[tuple[str, str, date], list[LedgerEntry]] = collections.defaultdict(list)
        for entry in entries:
            day = datetime.fromtimestamp(entry.time, UTC).date()
            groups[(charged_to(str(entry.mobile)), run.run_id, day)].append(entry)
        for key, group in groups.items():
            billed = sum(1 for e in group if e.billed)
            expected[key] = (currency, len(group), billed, 0, price * billed)
    assert {(s, r) for s, r, _ in expected} == {
        ("a", run1.run_id),
        ("a", run2.run_id),
        ("b", run2.run_id),
    }

    rows = query(
        db,
        "SELECT set_id, run_id, day, currency, calls, billed_calls, possibly_billed_calls, cost "
        f"FROM {CHARGES}",
    )
    got = {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}
    assert got == expected
    for row in rows:
        assert isinstance(row[7], Decimal)  # money stays exact, never float
    # Exact to the last digit: 0.0375 x n has four decimals, no rounding anywhere.
    (usd,) = query(db, f"SELECT sum(cost) FROM {CHARGES} WHERE currency = 'USD'")[0]
    assert usd == Decimal(price2) * sum(1 for e in ledger2 if e.billed)

    # The asset's metadata: row count and the per-currency totals table.
    meta = materialized(result, CHARGES)
    assert meta["dagster/row_count"] == len(expected)
    totals = md_rows(meta["mobile_status/totals"])
    assert totals[0] == ["currency", "calls", "billed", "cost"]
    by_currency = {r[0]: (int(r[1]), int(r[2]), Decimal(r[3])) for r in totals[1:]}
    assert by_currency == {
        "CNY": (len(ledger1), sum(e.billed for e in ledger1), expected_cost(ledger1, PRICE)),
        "USD": (len(ledger2), sum(e.billed for e in ledger2), expected_cost(ledger2, price2)),
    }


# --- the summary ----------------------------------------------------------------------


def test_summary_counts_equal_a_direct_count_of_mobile_status(
    simulator: SimulatorServer, db: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    built = build_mobile_status_assets()
    pool = sample_numbers(300, seed=21)
    messy = pool[0]
    sets: dict[str, list[str | None]] = {
        "a": [*pool[:180], *numbers_with_status(0, 3), *INVALID, pool[5], f"+86 {messy}"],
        "b": [*pool[150:], pool[160], "(139) 1234"],
    }
    seed_sets(db, sets)
    run = one_run(run_sets(simulator, db, ["a", "b"], instance=instance, built=built))
    assert run.success, run.message
    result = reports_and_checks(db, instance, built)
    assert result.success

    summary = query(db, f"SELECT set_id, status, operator, ported, numbers FROM {SUMMARY}")
    got = {tuple(r[:4]): r[4] for r in summary}
    assert len(got) == len(summary)  # one row per group

    direct: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for set_id, valid, status, operator, ported in query(
        db, "SELECT set_id, valid, status, operator, ported FROM mobile_status"
    ):
        key = (set_id, status, operator, ported) if valid else (set_id, "invalid", None, None)
        direct[key] += 1
    assert got == dict(direct)
    assert got == dict(expected_summary(sets))
    assert sum(got.values()) == sum(len(v) for v in sets.values())
    assert any(k[3] for k in got), "the sample must hold ported numbers"

    meta = materialized(result, SUMMARY)
    assert meta["dagster/row_count"] == len(summary)
    table = md_rows(meta["mobile_status/by_set_and_status"])
    statuses = table[0][1:]
    assert table[0][0] == "set"
    per_set: collections.Counter[tuple[str, str]] = collections.Counter()
    for (set_id, status, _, _), n in got.items():
        per_set[(set_id, status)] += n
    assert statuses == sorted({status for _, status in per_set})
    assert {r[0]: [int(c) for c in r[1:]] for r in table[1:]} == {
        s: [per_set[(s, st)] for st in statuses] for s in ("a", "b")
    }
    recorded = instance.fetch_materializations(dg.AssetKey(SUMMARY), limit=10).records
    assert recorded[0].run_id == result.run_id  # the newest materialization


def test_reporting_assets_rebuild_after_every_run(simulator: SimulatorServer, db: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    built = build_mobile_status_assets()
    seed_sets(db, {"a": sample_numbers(40)})
    assert one_run(run_sets(simulator, db, ["a"], instance=instance, built=built)).success
    first = reports_and_checks(db, instance, built)
    seed_sets(db, {"b": sample_numbers(30, seed=3)})
    assert one_run(run_sets(simulator, db, ["b"], instance=instance, built=built)).success
    second = reports_and_checks(db, instance, built)
    assert materialized(first, CHARGES)["dagster/row_count"] == 1
    assert materialized(second, CHARGES)["dagster/row_count"] == 2
    sets_before = {
        r[0] for r in md_rows(materialized(first, SUMMARY)["mobile_status/by_set_and_status"])[1:]
    }
    sets_after = {
        r[0] for r in md_rows(materialized(second, SUMMARY)["mobile_status/by_set_and_status"])[1:]
    }
    assert (sets_before, sets_after) == ({"a"}, {"a", "b"})
    assert query(db, f"SELECT DISTINCT set_id FROM {SUMMARY} ORDER BY 1") == [("a",), ("b",)]


def test_materialize_sets_rebuilds_reports_and_runs_checks_in_the_same_run(
    simulator: SimulatorServer, db: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    built = build_mobile_status_assets()
    seed_sets(db, {"a": sample_numbers(40)})
    run = one_run(run_sets(simulator, db, ["a"], instance=instance, built=built))
    assert run.success, run.message
    for key in (SUMMARY, CHARGES):
        records = instance.fetch_materializations(dg.AssetKey(key), limit=10).records
        assert [r.run_id for r in records] == [run.run_id], key
    for check in built.checks:
        for check_key in check.check_keys:
            latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
                [check_key]
            )[check_key]
            assert latest.run_id == run.run_id
            assert latest.status == AssetCheckExecutionRecordStatus.SUCCEEDED, check_key.name


# --- estimates ------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimateCase:
    """A set with cached, stale, unknown, invalid and new numbers after a first run."""

    cached: list[str]
    stale: list[str]
    unknown: list[str]
    new: list[str]
    rows: list[str | None]


def _estimate_case(unknowns: int) -> EstimateCase:
    pool = billable(sample_numbers(200, seed=31))
    cached, stale, new = pool[:100], pool[100:130], pool[130:150]
    unknown = numbers_with_status(0, unknowns) if unknowns else []
    rows: list[str | None] = [*cached, *stale, *unknown, *INVALID, cached[0]]
    return EstimateCase(cached, stale, unknown, new, rows)


def _plan_output(stdout: str, set_id: str) -> tuple[list[int], int, Decimal]:
    """The set's row (rows, invalid, numbers, from cache, to send), the total, the estimate."""
    (row,) = [line.split() for line in stdout.splitlines() if line.split()[:1] == [set_id]]
    (total_line,) = [line for line in stdout.splitlines() if "to send (de-duplicated" in line]
    total = int(total_line.split("across sets):")[1].split(";")[0])
    cost = Decimal(total_line.split("at most")[1].split()[0])
    return [int(c) for c in row[1:]], total, cost


@pytest.mark.parametrize("unknowns", [6, 0], ids=["with-unknowns", "no-unknowns"])
def test_estimate_and_plan_count_exactly_what_the_next_run_sends(
    simulator: SimulatorServer, db: Path, unknowns: int
) -> None:
    case = _estimate_case(unknowns)
    seed_sets(db, {"a": case.rows})
    assert one_run(run_sets(simulator, db, ["a"])).success
    backdate(db, case.stale, 31)
    seed_sets(db, {"a": case.new})
    mark = len(simulator.provider.ledger())

    estimate: CostEstimate = estimate_cost(
        file_connect(str(db)), SourceTable(), [Partition("a")], unit_price=Decimal(PRICE)
    )
    to_send = len(case.stale) + len(case.unknown) + len(case.new)
    distinct = len(case.cached) + to_send
    (plan,) = estimate.plan.sets
    rows = len(case.rows) + len(case.new)
    assert (plan.set_id, plan.rows, plan.invalid) == ("a", rows, len(INVALID))
    assert (plan.distinct_valid, plan.fresh, plan.to_send) == (distinct, len(case.cached), to_send)
    assert estimate.plan.to_send == to_send
    assert estimate.estimated_cost == Decimal(PRICE) * to_send

    env = base_env(**{settings.DB: str(db), settings.UNIT_PRICE: PRICE})
    cli = run_cli("plan", "--set", "a", env=env)
    assert cli.returncode == 0, cli.stderr
    counts, total, cost = _plan_output(cli.stdout, "a")
    assert counts == [rows, len(INVALID), distinct, len(case.cached), to_send]
    assert (total, cost) == (to_send, estimate.estimated_cost)
    assert len(simulator.provider.ledger()) == mark  # planning calls nobody

    run = one_run(run_sets(simulator, db, ["a"]))
    assert run.success, run.message
    sent = requests_since(simulator, mark)
    assert len(sent) == estimate.plan.to_send
    assert asked(sent) == sorted([*case.stale, *case.unknown, *case.new])
    billed_cost = Decimal(PRICE) * sum(1 for e in sent if e.billed)
    assert estimate.estimated_cost >= billed_cost
    assert estimate.estimated_cost - billed_cost == Decimal(PRICE) * len(case.unknown)
    if not case.unknown:
        assert estimate.estimated_cost == billed_cost


# --- budget ---------------------------------------------------------------------------


def test_budget_caps_the_bill_publishes_only_finished_sets_and_resumes(
    simulator: SimulatorServer, db: Path
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    pool = sample_numbers(260, seed=41)
    a, b = pool[:60], pool[60:]
    seed_sets(db, {"a": [*a, "abc"], "b": b})
    budget = len(billable(a)) + 20

    failed = one_run(run_sets(simulator, db, ["a", "b"], instance=instance, max_billed=budget))
    assert not failed.success
    sent = simulator.provider.ledger()
    billed = [e for e in sent if e.billed]
    assert len(billed) <= budget
    assert len(billed) == budget  # no faults: every unit of the budget is used
    remaining = len(pool) - len(sent)
    still_missing = len(set(b) - set(asked(sent)))
    assert failed.message is not None
    for text in (
        f"budget of {budget} billed call(s) reached",
        f"{remaining} number(s) remain unchecked",
        "1 partition(s) not published (b)",
        f"{still_missing} number(s) still have no answer",
    ):
        assert text in failed.message
    assert query(db, "SELECT set_id, count(*) FROM mobile_status GROUP BY ALL") == [("a", 61)]
    records = instance.fetch_materializations(dg.AssetKey("mobile_status"), limit=10).records
    assert [r.partition_key for r in records if r.run_id == failed.run_id] == ["a"]

    # Resume with a budget that is still too small, then with none.
    mark = len(simulator.provider.ledger())
    again = one_run(run_sets(simulator, db, ["a", "b"], instance=instance, max_billed=40))
    assert not again.success
    assert again.message is not None
    assert "budget of 40" in again.message
    # The budget counts what the client knows is (or may be) billed: exactly 40 here,
    # and the provider's bill never exceeds it.
    charged = query(
        db,
        "SELECT count(*) FROM provider_calls WHERE run_id = ? AND (billed OR possibly_billed)",
        [again.run_id],
    )
    assert charged == [(40,)]
    assert sum(1 for e in requests_since(simulator, mark) if e.billed) <= 40
    assert_nothing_billed_twice(simulator)
    assert query(db, "SELECT DISTINCT set_id FROM mobile_status") == [("a",)]

    done = one_run(run_sets(simulator, db, ["a", "b"], instance=instance))
    assert done.success, done.message
    assert_nothing_billed_twice(simulator)
    assert asked(simulator.provider.ledger(billed_only=True)) == sorted(billable(pool))
    assert query(
        db,
        "SELECT set_id, count(*), count(status_code) FROM mobile_status WHERE valid "
        "GROUP BY ALL ORDER BY 1",
    ) == [("a", 60, 60), ("b", 200, 200)]


def test_budget_holds_when_timeouts_make_calls_possibly_billed(
    simulator: SimulatorServer, db: Path
) -> None:
    seed_sets(db, {"a": sample_numbers(150, seed=43)})
    simulator.provider.update_config(slow_rate=0.3, slow_ms=2000)
    budget = 25
    run = one_run(run_sets(simulator, db, ["a"], max_billed=budget, timeout_s=0.3, max_retries=2))
    assert not run.success
    ledger = simulator.provider.ledger()
    billed = [e for e in ledger if e.billed]
    assert any(e.fault == "slow" for e in billed), "timeouts must be in play"
    assert len(billed) <= budget
    audit = query(
        db,
        "SELECT count(*) FILTER (WHERE billed), count(*) FILTER (WHERE possibly_billed) "
        "FROM provider_calls",
    )
    (audited_billed, possibly) = audit[0]
    assert possibly > 0
    assert audited_billed + possibly <= budget
    # Every billed call is in the audit, as billed or as possibly billed.
    assert len(billed) <= audited_billed + possibly
    answered = {o for (o,) in query(db, "SELECT order_number FROM provider_calls WHERE billed")}
    assert {e.order_number for e in billed if e.fault is None} <= answered
    assert query(db, "SELECT count(*) FROM mobile_status") == [(0,)]


# --- asset checks ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def enriched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database after one good run over sets a and b (copied by each check test)."""
    db = tmp_path_factory.mktemp("checks") / "pristine.duckdb"
    pool = sample_numbers(160, seed=51)
    seed_sets(
        db, {"a": [*pool[:100], *numbers_with_status(0, 2), *INVALID], "b": [*pool[80:], "x"]}
    )
    with SimulatorServer(SimulatorConfig(latency_ms=0)) as sim:
        assert one_run(run_sets(sim, db, ["a", "b"])).success
    return db


def _billed_call(conn: duckdb.DuckDBPyConnection, set_id: str = "a") -> tuple[str, str]:
    row = conn.execute(
        "SELECT order_number, mobile FROM provider_calls WHERE billed AND set_id = ? "
        "ORDER BY mobile LIMIT 1",
        [set_id],
    ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def _billed_again(reason: str, after: str) -> Callable[[duckdb.DuckDBPyConnection], str]:
    def tamper(conn: duckdb.DuckDBPyConnection) -> str:
        order_number, mobile = _billed_call(conn)
        conn.execute(
            f"INSERT INTO provider_calls SELECT * REPLACE (requested_at + INTERVAL {after} "
            "AS requested_at, ? AS reason, 'TAMPERED00000000000000000000000001' AS order_number) "
            "FROM provider_calls WHERE order_number = ?",
            [reason, order_number],
        )
        return mobile

    return tamper


def _delete_audit_row(conn: duckdb.DuckDBPyConnection) -> str:
    order_number, mobile = _billed_call(conn)
    conn.execute("DELETE FROM provider_calls WHERE order_number = ?", [order_number])
    return mobile


def _duplicate_order_number(conn: duckdb.DuckDBPyConnection) -> str:
    order_number, mobile = _billed_call(conn)
    # A second billed row with the same order number (a forced call, so that only the
    # reconciliation has something to say about it).
    conn.execute(
        "INSERT INTO provider_calls SELECT * REPLACE (requested_at + INTERVAL 1 HOUR "
        "AS requested_at, 'forced' AS reason) FROM provider_calls WHERE order_number = ?",
        [order_number],
    )
    return mobile


def _null_status(conn: duckdb.DuckDBPyConnection) -> str:
    (mobile,) = conn.execute(
        "SELECT min(mobile) FROM mobile_status WHERE set_id = 'b' AND valid"
    ).fetchone() or ("",)
    conn.execute(
        "UPDATE mobile_status SET status_code = NULL, status = NULL "
        "WHERE set_id = 'b' AND mobile = ?",
        [mobile],
    )
    return str(mobile)


def _add_to_source(raw: str) -> Callable[[duckdb.DuckDBPyConnection], str]:
    def tamper(conn: duckdb.DuckDBPyConnection) -> str:
        conn.execute("INSERT INTO number_sets (set_id, mobile) VALUES ('b', ?)", [raw])
        return raw

    return tamper


@dataclass(frozen=True)
class Tamper:
    name: str
    apply: Callable[[duckdb.DuckDBPyConnection], str] | None  # returns the number touched
    failing: str | None  # the check expected to fail; the others must pass
    detail: dict[str, int]


TAMPERS = [
    Tamper("good-data", None, None, {}),
    Tamper(
        "audit-row-deleted",
        _delete_audit_row,
        "audit_reconciliation",
        {"answers_without_audit": 1, "duplicated_order_numbers": 0},
    ),
    Tamper(
        "order-number-duplicated",
        _duplicate_order_number,
        "audit_reconciliation",
        {"answers_without_audit": 0, "duplicated_order_numbers": 1},
    ),
    Tamper("billed-again-while-fresh", _billed_again("stale", "1 DAY"), "no_double_billing", {}),
    Tamper("forced-refresh-while-fresh", _billed_again("forced", "1 DAY"), None, {}),
    Tamper("billed-again-once-stale", _billed_again("stale", "31 DAYS"), None, {}),
    Tamper("published-status-nulled", _null_status, "coverage", {}),
    Tamper("number-added-after-publishing", _add_to_source("13312345678"), "coverage", {}),
    Tamper("invalid-row-added-after-publishing", _add_to_source("not a number"), None, {}),
]


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name for t in TAMPERS])
def test_asset_checks_pass_on_good_data_and_fail_on_tampered_data(
    enriched: Path, tmp_path: Path, tamper: Tamper
) -> None:
    db = tmp_path / "checked.duckdb"
    shutil.copy(enriched, db)
    touched = None
    if tamper.apply is not None:
        with duckdb.connect(str(db)) as conn:
            touched = tamper.apply(conn)
    built = build_mobile_status_assets()
    result = reports_and_checks(db, dg.DagsterInstance.ephemeral(), built)
    assert result.success  # a failed check is an evaluation, not a failed step

    for name, evaluation in evaluations(result).items():
        meta = {k: v.value for k, v in evaluation.metadata.items()}
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        if name != tamper.failing:
            assert evaluation.passed, (name, meta)
            assert meta["mobile_status/problems"] == 0
            continue
        assert not evaluation.passed, (name, meta)
        assert meta["mobile_status/problems"] == 1
        for key, value in tamper.detail.items():
            assert meta[f"mobile_status/{key}"] == value, key
        examples = str(meta["mobile_status/examples"])
        assert touched is not None
        assert touched not in examples  # numbers are masked in metadata
        if name != "audit_reconciliation":
            assert numbers.mask(touched) in examples


# --- the stale-refresh schedule -------------------------------------------------------


def test_schedule_selects_exactly_the_partitions_with_stale_or_unanswered_numbers(
    simulator: SimulatorServer, db: Path
) -> None:
    # Schedule contexts need a persistent instance. Entering one sets a context variable
    # (Dagster's current DefsStateStorage) that its exit never resets, so later tests would
    # load definitions against a deleted instance: run in a copy of the context.
    contextvars.copy_context().run(_check_schedule, simulator, db)


def _check_schedule(simulator: SimulatorServer, db: Path) -> None:
    with dg.instance_for_test() as instance:
        _check_schedule_with(simulator, db, instance)


def _check_schedule_with(
    simulator: SimulatorServer, db: Path, instance: dg.DagsterInstance
) -> None:
    built = build_mobile_status_assets()
    defs = dg.Definitions.merge(
        built.definitions, dg.Definitions(resources=resources(simulator, db))
    )
    schedule = defs.resolve_schedule_def(STALE_SCHEDULE)
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    pool = billable(sample_numbers(200, seed=61))
    unknown = numbers_with_status(0, 4)
    seed_sets(
        db,
        {
            "fresh": pool[:50],
            "stale": pool[50:100],
            "unknown-only": [*unknown, "abc"],
            "mixed": [*pool[100:140], unknown[0]],
            "later": pool[140:170],
            "invalid-only": ["abc", None],
        },
    )
    ran = ["fresh", "stale", "unknown-only", "mixed"]
    assert all(r.success for r in run_sets(simulator, db, ran, instance=instance, built=built))
    instance.add_dynamic_partitions(DEFAULT_PARTITIONS_NAME, ["later", "invalid-only"])
    backdate(db, pool[50:53], 31)
    mark = len(simulator.provider.ledger())

    def selected(at: datetime) -> list[str] | str:
        with dg.build_schedule_context(
            instance=instance,
            resources={"duckdb": DuckDBResource(database=str(db))},
            scheduled_execution_time=at,
            repository_def=defs.get_repository_def(),
        ) as context:
            data = schedule.evaluate_tick(context)
        if data.skip_message is not None:
            assert not data.run_requests
            return f"skip: {data.skip_message}"
        requests = list(data.run_requests or [])
        day = at.strftime("%Y-%m-%d")
        for request in requests:
            assert request.run_key == f"{request.partition_key}@{day}"
        return [str(r.partition_key) for r in requests]

    now = datetime.now(UTC)
    assert selected(now) == ["later", "stale"]
    # A month on, every billed answer has expired; unknown and invalid numbers never do.
    assert selected(now + timedelta(days=31)) == ["fresh", "later", "mixed", "stale"]
    assert len(simulator.provider.ledger()) == mark  # evaluating costs nothing

    assert all(r.success for r in run_sets(simulator, db, ["stale", "later"], instance=instance))
    assert selected(now) == "skip: no partition has stale numbers"


# --- the reporting commands -----------------------------------------------------------


def _clean_error(result: subprocess.CompletedProcess[str], *texts: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for text in texts:
        assert text in lines[0], lines[0]


def _read(path: Path) -> list[tuple[Any, ...]]:
    """``(mobile, status)`` rows of an exported file (CSV read as text: no guessed types)."""
    reader = "read_csv(?, all_varchar = true)" if path.suffix == ".csv" else "read_parquet(?)"
    with duckdb.connect() as conn:
        return conn.execute(
            f"SELECT mobile, status FROM {reader} ORDER BY ALL", [str(path)]
        ).fetchall()


def test_export_report_commands(simulator: SimulatorServer, db: Path, tmp_path: Path) -> None:
    pool = sample_numbers(200, seed=71)
    a = [*pool[:150], *INVALID, pool[3], f"+86 {pool[4][:3]}-{pool[4][3:7]}-{pool[4][7:]}"]
    seed_sets(db, {"a": a, "b": pool[140:], "unpublished": pool[:3]})
    assert one_run(run_sets(simulator, db, ["a", "b"])).success
    env = base_env(**{settings.DB: str(db), settings.UNIT_PRICE: PRICE})
    mark = len(simulator.provider.ledger())

    wanted = {Status.ONLINE, Status.VACANT}
    expected = sorted((m, Status(truth(m)).label) for m in set(pool[:150]) if truth(m) in wanted)
    assert {label for _, label in expected} == {"online", "vacant"}
    published = query(
        db,
        "SELECT DISTINCT mobile, status FROM mobile_status WHERE set_id = 'a' "
        "AND status IN ('online', 'vacant') ORDER BY ALL",
    )
    assert published == expected
    for name in ("out.csv", "out.parquet"):
        out = tmp_path / name
        result = run_cli(
            "export", "--set", "a", "--status", "online,vacant", "--out", str(out), env=env
        )
        assert result.returncode == 0, result.stderr
        assert f"wrote {len(expected)} number(s)" in result.stdout
        assert _read(out) == expected  # distinct: the duplicated and messy rows once

    bad = tmp_path / "bad.csv"
    result = run_cli("export", "--set", "a", "--status", "online,onlin", "--out", str(bad), env=env)
    _clean_error(result, "--status", "onlin")
    assert not bad.exists()
    result = run_cli("export", "--set", "unpublished", "--out", str(bad), env=env)
    _clean_error(result, "unpublished", "no published rows")
    assert not bad.exists()

    result = run_cli("report", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    status_at, charges_at = lines.index("status by set:"), lines.index("charges by set (all runs):")
    header = lines[status_at + 1].split()
    assert header == ["set", *STATUS_COLUMNS]
    rows = {r.split()[0]: r.split()[1:] for r in lines[status_at + 2 : charges_at] if r.split()}
    for set_id, raws in (("a", a), ("b", pool[140:])):
        counts = collections.Counter(
            "invalid" if (m := numbers.normalize(raw).mobile) is None else Status(truth(m)).label
            for raw in raws
        )
        assert rows[set_id] == [str(counts[c]) for c in STATUS_COLUMNS], set_id
    assert "unpublished" not in rows
    charged = {r.split()[0]: r.split()[1:] for r in lines[charges_at + 2 :]}
    ledger = simulator.provider.ledger()
    for set_id, mobiles in (("a", set(pool[:150])), ("b", set(pool[150:]))):
        entries = [e for e in ledger if e.mobile in mobiles]
        billed = sum(1 for e in entries if e.billed)
        cost = Decimal(PRICE) * billed
        assert charged[set_id] == [str(len(entries)), str(billed), "0", f"{cost:.2f}", "CNY"]
    assert len(simulator.provider.ledger()) == mark  # reporting calls nobody


def test_report_never_adds_up_different_currencies(
    simulator: SimulatorServer, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = billable(sample_numbers(40, seed=81))
    seed_sets(db, {"a": pool[:20]})
    assert one_run(run_sets(simulator, db, ["a"])).success  # 20 x 0.05 CNY
    seed_sets(db, {"a": pool[20:]})
    assert one_run(run_sets(simulator, db, ["a"], unit_price="1.00", currency="USD")).success
    usd = Decimal("1.00") * len(pool[20:])
    capsys.readouterr()
    print_report(str(db), ["a"])
    out = capsys.readouterr().out
    mixed = Decimal(PRICE) * 20 + usd
    assert f"{mixed:.2f}" not in out
    assert "1.00 CNY" in out
    assert f"{usd:.2f} USD" in out
