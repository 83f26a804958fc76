"""A run costs what its delta costs: the summary, the charges and the checks are incremental.

The summary and the charges are kept current where they change (publishing a partition
replaces its summary rows; each journal fold adds its charges), and the checks of a run
examine what that run changed. Each test compares the incremental result with a full
rebuild or a full check over the same real DuckDB file, after real Dagster runs
against the simulator.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.core.engine import journal_dir_for
from mobile_status_dagster.core.engine.journal import Journal
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store import audit_checks, file_connect, publish
from mobile_status_dagster.core.store.connection import memory_limit_bytes
from mobile_status_dagster.core.store.publish import PartitionOutcome, publish_partitions
from mobile_status_dagster.core.store.schema import (
    CHARGES,
    DEFAULT_TABLES,
    SUMMARY,
    ensure_schema,
)
from mobile_status_dagster.core.store.source import Partition, SourceTable
from mobile_status_dagster.integration.assets import (
    MobileStatusAssets,
    build_mobile_status_assets,
)
from mobile_status_dagster.integration.checks import FULL_CHECK_TAG
from mobile_status_dagster.integration.resources import MobileStatusResource
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorServer
from tests.support import one_run, query, run_sets, sample_numbers, seed_sets

SUMMARY_SQL = f"SELECT set_id, status, operator, ported, numbers FROM {SUMMARY} ORDER BY ALL"
CHARGES_SQL = (
    "SELECT day, set_id, run_id, currency, calls, billed_calls, possibly_billed_calls, cost "
    f"FROM {CHARGES} ORDER BY ALL"
)
FULL_SUMMARY_SQL = """
    SELECT set_id, CASE WHEN NOT valid THEN 'invalid' ELSE coalesce(status, 'none') END,
           operator, ported, count(*)
    FROM mobile_status GROUP BY ALL ORDER BY ALL
"""
FULL_CHARGES_SQL = """
    SELECT CAST(timezone('UTC', requested_at) AS DATE), set_id, run_id, currency, count(*),
           count(*) FILTER (WHERE billed), count(*) FILTER (WHERE possibly_billed),
           coalesce(sum(unit_price) FILTER (WHERE billed), 0)
    FROM provider_calls GROUP BY ALL ORDER BY ALL
"""


def derived_and_checks(
    db: Path,
    built: MobileStatusAssets,
    *,
    full_rebuild: bool = False,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the summary and the charges and run the checks, without enriching."""
    config: dict[str, Any] = {"full_rebuild": full_rebuild}
    return dg.materialize(
        [built.enrichment, *built.reporting, *built.checks],
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "mobile_status_api": MobileStatusResource(
                base_url="http://127.0.0.1:9", token=DEMO_TOKEN
            ),
            "duckdb": DuckDBResource(database=str(db)),
        },
        selection=dg.AssetSelection.assets(*built.reporting)
        | dg.AssetSelection.checks(*built.checks),
        run_config={
            "ops": {asset.op.name: {"config": config} for asset in built.reporting},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
        tags=tags,
    )


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    return {
        e.check_name: {k: v.value for k, v in e.metadata.items()} | {"passed": e.passed}
        for e in result.get_asset_check_evaluations()
    }


@pytest.fixture
def warehouse(simulator: SimulatorServer, db: Path) -> Path:
    """Three sets published by three runs, some numbers shared, one run with retries."""
    seed_sets(
        db,
        {
            "a": [*sample_numbers(30, seed=1), "not a number", None],
            "b": [*sample_numbers(20, seed=2), *sample_numbers(5, seed=1)],
            "c": sample_numbers(25, seed=3),
        },
    )
    for set_id in ("a", "b", "c"):
        assert one_run(run_sets(simulator, db, [set_id])).success
    return db


def test_the_summary_and_charges_kept_by_runs_equal_a_full_rebuild(
    simulator: SimulatorServer, warehouse: Path
) -> None:
    # One more run that republishes a set and pays for a new one, with provider faults.
    seed_sets(warehouse, {"d": sample_numbers(40, seed=4)})
    simulator.provider.update_config(internal_error_rate=0.1, slow_rate=0.05, slow_ms=1500)
    assert one_run(run_sets(simulator, warehouse, ["c", "d"], timeout_s=1.0, max_retries=6)).success
    summary = query(warehouse, SUMMARY_SQL)
    charges = query(warehouse, CHARGES_SQL)
    assert summary == query(warehouse, FULL_SUMMARY_SQL)
    assert charges == query(warehouse, FULL_CHARGES_SQL)
    assert {row[0] for row in summary} == {"a", "b", "c", "d"}
    assert len({row[2] for row in charges}) == 4  # one charges group per run


def test_a_partition_republished_replaces_only_its_own_summary_rows(
    simulator: SimulatorServer, warehouse: Path
) -> None:
    before = query(warehouse, SUMMARY_SQL)
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("DELETE FROM number_sets WHERE set_id = 'c' AND mobile > '15'")
    assert one_run(run_sets(simulator, warehouse, ["c"])).success
    after = query(warehouse, SUMMARY_SQL)
    assert [r for r in after if r[0] != "c"] == [r for r in before if r[0] != "c"]
    assert [r for r in after if r[0] == "c"] != [r for r in before if r[0] == "c"]
    assert after == query(warehouse, FULL_SUMMARY_SQL)


def test_a_recovered_journal_segment_adds_its_charges(simulator: SimulatorServer, db: Path) -> None:
    """Charges of a dead run, folded by the next run's recovery, are counted once."""
    seed_sets(db, {"a": sample_numbers(10, seed=5)})
    assert one_run(run_sets(simulator, db, ["a"])).success
    dead = Journal(journal_dir_for(str(db)), "dead-run", unit_price=Decimal("0.05"), currency="CNY")
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    line = {
        "m": sample_numbers(1, seed=6)[0],
        "s": "z",
        "why": "new",
        "n": 1,
        "t": now_us,
        "h": 200,
        "c": 200,
        "o": "DEADRUNORDER0001",
        "st": 1,
        "op": "CM",
        "b": True,
        "keep": True,
    }
    dead._write_lines([json.dumps(line)])
    dead.current.release()  # the run died: its segment is left for the next run
    seed_sets(db, {"b": sample_numbers(5, seed=7)})
    assert one_run(run_sets(simulator, db, ["b"])).success
    charges = query(db, CHARGES_SQL)
    assert charges == query(db, FULL_CHARGES_SQL)
    assert [r[4:] for r in charges if r[2] == "dead-run"] == [(1, 1, 0, Decimal("0.05"))]


def test_a_version_1_database_gets_its_summary_and_charges_rebuilt_once(
    warehouse: Path,
) -> None:
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute(f"DELETE FROM {SUMMARY}")
        conn.execute(f"DROP TABLE {CHARGES}")  # version 1 made it only when materialized
        conn.execute(f"UPDATE {DEFAULT_TABLES.version} SET version = 1")
        ensure_schema(conn, DEFAULT_TABLES)
        assert conn.execute(f"SELECT version FROM {DEFAULT_TABLES.version}").fetchall() == [(2,)]
    assert query(warehouse, SUMMARY_SQL) == query(warehouse, FULL_SUMMARY_SQL)
    assert query(warehouse, CHARGES_SQL) == query(warehouse, FULL_CHARGES_SQL)
    assert query(warehouse, SUMMARY_SQL)
    assert query(warehouse, CHARGES_SQL)


def test_the_derived_assets_read_the_tables_and_rebuild_them_on_demand(
    warehouse: Path,
) -> None:
    good_summary, good_charges = query(warehouse, SUMMARY_SQL), query(warehouse, CHARGES_SQL)
    with duckdb.connect(str(warehouse)) as conn:  # a person edited the derived tables
        conn.execute(f"DELETE FROM {SUMMARY} WHERE set_id = 'a'")
        conn.execute(f"UPDATE {CHARGES} SET calls = calls + 100")
    built = build_mobile_status_assets()
    derived_and_checks(warehouse, built)
    assert query(warehouse, SUMMARY_SQL) != good_summary  # read, not rebuilt
    result = derived_and_checks(warehouse, built, full_rebuild=True)
    assert query(warehouse, SUMMARY_SQL) == good_summary
    assert query(warehouse, CHARGES_SQL) == good_charges
    summary_meta = [
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == built.names.summary
    ]
    assert summary_meta[0]["dagster/row_count"].value == len(good_summary)


def break_partition(db: Path, set_id: str) -> str:
    """Null one published answer of ``set_id`` (coverage) and delete one of its audit rows
    (reconciliation); return the order number removed."""
    with duckdb.connect(str(db)) as conn:
        mobile, order_number = conn.execute(
            "SELECT mobile, order_number FROM mobile_status WHERE set_id = ? AND valid "
            "AND source = 'provider' ORDER BY mobile LIMIT 1",
            [set_id],
        ).fetchone() or ("", "")
        conn.execute(
            "UPDATE mobile_status SET status_code = NULL, status = NULL "
            "WHERE set_id = ? AND mobile = ?",
            [set_id, mobile],
        )
        conn.execute("DELETE FROM provider_calls WHERE order_number = ?", [order_number])
    return str(order_number)


def test_a_runs_checks_examine_its_changes_and_a_full_check_everything(
    simulator: SimulatorServer, warehouse: Path, tmp_path: Path
) -> None:
    break_partition(warehouse, "a")  # damage outside what the next run touches
    seed_sets(warehouse, {"d": sample_numbers(15, seed=9)})
    built = build_mobile_status_assets()
    run = one_run(run_sets(simulator, warehouse, ["d"], built=built))
    assert run.success
    instance_copy = tmp_path / "copy.duckdb"
    shutil.copy(warehouse, instance_copy)

    # The run's own checks looked at set d and its calls only: they pass.
    with duckdb.connect(str(warehouse)) as conn:
        for name, outcome in {
            "coverage": audit_checks.coverage(
                conn,
                SourceTable(),
                lambda keys: [Partition(k) for k in keys],
                tables=DEFAULT_TABLES,
                run_id=run.run_id,
            ),
            "audit_reconciliation": audit_checks.audit_reconciliation(
                conn, tables=DEFAULT_TABLES, run_id=run.run_id
            ),
        }.items():
            assert outcome.passed, (name, outcome)

    # The run's reconciliation finds an answer billed in another run's audit row, and
    # misses none whose billed call is gone from the audit.
    with duckdb.connect(str(instance_copy)) as conn:
        moved, deleted = conn.execute(
            "SELECT order_number FROM provider_calls WHERE billed AND run_id = ? "
            "ORDER BY order_number LIMIT 2",
            [run.run_id],
        ).fetchall()
        conn.execute("UPDATE provider_calls SET run_id = 'other' WHERE order_number = ?", moved)
        assert audit_checks.audit_reconciliation(
            conn, tables=DEFAULT_TABLES, run_id=run.run_id
        ).passed
        conn.execute("DELETE FROM provider_calls WHERE order_number = ?", deleted)
        outcome = audit_checks.audit_reconciliation(conn, tables=DEFAULT_TABLES, run_id=run.run_id)
        assert outcome.detail["answers_without_audit"] == 1, outcome

    # Run on their own, or tagged for a full check, they examine everything.
    for tags in (None, {FULL_CHECK_TAG: "true"}):
        evaluations = check_evaluations(derived_and_checks(warehouse, built, tags=tags))
        assert not evaluations["coverage"]["passed"]
        assert not evaluations["audit_reconciliation"]["passed"]
        assert evaluations["coverage"]["mobile_status/scope"] == "everything"


def test_a_materialization_run_reports_its_checks_scope(
    simulator: SimulatorServer, warehouse: Path
) -> None:
    seed_sets(warehouse, {"d": sample_numbers(15, seed=9)})
    instance = dg.DagsterInstance.ephemeral()
    run = one_run(run_sets(simulator, warehouse, ["d"], instance=instance))
    assert run.success
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("mobile_status"), "coverage"), limit=1
    )
    event = records[0].event
    assert event is not None
    assert event.dagster_event is not None
    evaluation = event.dagster_event.event_specific_data
    assert isinstance(evaluation, dg.AssetCheckEvaluation)
    assert evaluation.metadata["mobile_status/scope"].value == "this run's changes"
    assert evaluation.passed


def _publish_everything(db: Path, set_ids: list[str]) -> list[PartitionOutcome]:
    with file_connect(str(db))() as conn:
        return publish_partitions(
            conn,
            SourceTable(),
            [Partition(s) for s in set_ids],
            tables=DEFAULT_TABLES,
            run_id="publish",
            freshness=Freshness(),
            now=datetime.now(UTC),
        )


def test_partitions_inserted_in_batches_publish_what_one_insert_publishes(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishing inserts the rows a few partitions at a time, each batch's join sized to
    fit DuckDB's memory; the published rows, summary and outcomes are those of one insert."""
    numbers = sample_numbers(600, seed=5)
    extra: list[str | None] = ["12345", None, numbers[0]]
    sets = {f"s{i}": [*numbers[i * 100 : i * 100 + 100 + 20 * i], *extra] for i in range(5)}
    seed_sets(db, sets)
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        conn.executemany(
            f"INSERT INTO {DEFAULT_TABLES.cache} "
            "VALUES (?, 1, 'online', 'CM', ?, 2000, now(), 'seed')",
            [(n, f"o{i}") for i, n in enumerate(numbers)],
        )
    batched = tmp_path / "batched.duckdb"
    shutil.copyfile(db, batched)
    set_ids = sorted(sets)
    whole = _publish_everything(db, set_ids)
    # A budget of about 250 rows: batches of one or two partitions.
    with file_connect(str(batched))() as conn:
        limit = memory_limit_bytes(conn)
        assert limit is not None
        monkeypatch.setattr(publish, "PUBLISHED_ROW_BYTES", limit // 250)
    rows_by_set = {set_id: len(sets[set_id]) for set_id in set_ids}
    batches = publish.insert_batches(limit, rows_by_set)
    assert batches == [["s0", "s1"], ["s2"], ["s3"], ["s4"]]
    assert publish.insert_batches(None, rows_by_set) == [set_ids]
    assert [s for batch in batches for s in batch] == set_ids
    assert _publish_everything(batched, set_ids) == whole
    assert all(o.published for o in whole)
    for table in (DEFAULT_TABLES.published, DEFAULT_TABLES.summary):
        columns = "* EXCLUDE (run_id)" if table == DEFAULT_TABLES.published else "*"
        ordered = f"SELECT {columns} FROM {table} ORDER BY ALL"
        assert query(batched, ordered) == query(db, ordered) != []
