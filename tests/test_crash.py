"""Crashes, interruptions, a failing DuckDB and concurrent runs: nothing lost, nothing paid twice.

The runs here are real ``mobile-status enrich`` processes, killed for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.cli.main import EXIT_STATUS
from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.core.engine import EnrichmentJob, enrich, journal_dir_for
from mobile_status_dagster.core.errors import StoreWriteError
from mobile_status_dagster.core.store import Partition, SourceTable, file_connect
from mobile_status_dagster.core.store.connection import Connect
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import build_mobile_status_assets
from mobile_status_dagster.integration.sensors import NEW_SETS_SENSOR
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorConfig, SimulatorServer
from tests.support import (
    COMMAND,
    billed_twice,
    cli_env,
    query,
    resources,
    run_cli,
    sample_numbers,
    seed_sets,
)

CONCURRENCY = 16
CONCURRENT = {settings.MAX_CONCURRENCY: str(CONCURRENCY)}
"""The CLI runs' concurrency, as an environment change for :func:`cli_env`."""


def start_enrich(env: dict[str, str], *sets: str) -> subprocess.Popen[str]:
    args = [arg for s in sets for arg in ("--set", s)]
    return subprocess.Popen(
        [str(COMMAND), "enrich", *args, "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_calls(sim: SimulatorServer, at_least: int, timeout_s: float = 60) -> None:
    """Block until the simulator saw ``at_least`` requests."""
    deadline = time.monotonic() + timeout_s
    while len(sim.provider.ledger()) < at_least:
        assert time.monotonic() < deadline, "the run never reached the provider"
        time.sleep(0.01)


def assert_set_complete(db: Path, set_id: str, numbers: list[str]) -> None:
    """Published, one row per input row, every valid number answered."""
    rows = query(
        db,
        "SELECT count(*), count(*) FILTER (WHERE status_code IS NULL) FROM mobile_status "
        "WHERE set_id = ?",
        [set_id],
    )
    assert rows == [(len(numbers), 0)]


@pytest.mark.slow
def test_sigkill_at_random_points_loses_at_most_the_requests_in_flight(db: Path) -> None:
    numbers = sample_numbers(1500, seed=21)
    seed_sets(db, {"s": numbers})
    rng = random.Random(5)
    kills = 0
    with SimulatorServer(SimulatorConfig(latency_ms=20, jitter_ms=10, seed=3)) as sim:
        env = cli_env(sim, db, **CONCURRENT)
        for _ in range(4):
            before = len(sim.provider.ledger())
            process = start_enrich(env, "s")
            wait_for_calls(sim, before + rng.randrange(20, 300))
            time.sleep(rng.uniform(0, 0.3))  # anywhere: mid-call, mid-fold, mid-publish
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            kills += 1
        final = run_cli("enrich", "--set", "s", "--quiet", env=env)
        assert final.returncode == 0, final.stderr
        assert_set_complete(db, "s", numbers)
        twice = billed_twice(sim)
        # Only answers in flight at a kill can be paid for and lost.
        assert len(twice) <= kills * CONCURRENCY, len(twice)
        billed = {e.order_number for e in sim.provider.ledger(billed_only=True)}
        audited = {r[0] for r in query(db, "SELECT order_number FROM provider_calls WHERE billed")}
        assert audited <= billed
        assert len(billed - audited) <= kills * CONCURRENCY
    assert not list(journal_dir_for(str(db)).glob("*.jsonl")), "journal left unfolded"


@pytest.mark.slow
def test_sigterm_stops_cleanly_keeps_every_answer_and_the_rerun_completes(db: Path) -> None:
    numbers = sample_numbers(1200, seed=22)
    seed_sets(db, {"s": numbers})
    with SimulatorServer(SimulatorConfig(latency_ms=30, seed=3)) as sim:
        env = cli_env(sim, db, **CONCURRENT)
        process = start_enrich(env, "s")
        wait_for_calls(sim, 200)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == EXIT_STATUS["interrupted"]
        assert "interrupted" in stderr
        assert "rerun" in stderr
        # The journal was folded on the way out: every answer that arrived is in DuckDB.
        assert not list(journal_dir_for(str(db)).glob("*.jsonl"))
        answered = {r[0] for r in query(db, "SELECT mobile FROM mobile_status_latest")}
        assert len(answered) >= 150
        assert query(db, "SELECT count(*) FROM mobile_status") == [(0,)]

        final = run_cli("enrich", "--set", "s", "--quiet", env=env)
        assert final.returncode == 0, final.stderr
        assert_set_complete(db, "s", numbers)
        assert len(billed_twice(sim)) <= CONCURRENCY


class FailingConnect:
    """A :data:`Connect` that breaks every write after the first ``healthy`` connections."""

    def __init__(self, db: Path, healthy: int, error: str) -> None:
        self._connect = file_connect(str(db))
        self._healthy = healthy
        self._error = error
        self.opened = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.opened += 1
        if self.opened <= self._healthy:
            with self._connect() as conn:
                yield conn
            return
        raise duckdb.IOException(self._error)


def run_engine(sim: SimulatorServer, db: Path, connect: Connect, run_id: str) -> object:
    async def go() -> object:
        settings_ = ClientSettings(base_url=sim.base_url, token=DEMO_TOKEN, max_concurrency=8)
        async with AsyncMobileStatusClient(settings_) as client:
            job = EnrichmentJob(source=SourceTable(), partitions=(Partition("s"),), run_id=run_id)
            return await enrich(
                job, client=client, connect=connect, journal_dir=journal_dir_for(str(db))
            )

    return asyncio.run(go())


@pytest.mark.parametrize(
    "error", ["IO Error: No space left on device", "Cannot write to a read-only database"]
)
@pytest.mark.parametrize(("healthy", "failing_step"), [(1, "journal"), (2, "publish")])
def test_a_failing_duckdb_write_fails_clearly_and_loses_nothing(
    db: Path, error: str, healthy: int, failing_step: str
) -> None:
    numbers = sample_numbers(400, seed=23)
    seed_sets(db, {"s": numbers[:100]})
    with SimulatorServer(SimulatorConfig(latency_ms=5)) as sim:
        run_engine(sim, db, file_connect(str(db)), "first")
        before = query(db, "SELECT * FROM mobile_status ORDER BY ALL")
        audit_before = query(db, "SELECT count(*) FROM provider_calls")
        seed_sets(db, {"s": numbers[100:]})

        # The plan succeeds; then the journal fold (1) or the publish (2) fails.
        failing = FailingConnect(db, healthy=healthy, error=error)
        with pytest.raises(StoreWriteError) as raised:
            run_engine(sim, db, failing, "broken")
        message = str(raised.value)
        assert error in message
        assert failing_step in message
        assert DEMO_TOKEN not in message
        # What was published is intact; the new answers wait in the journal or the cache.
        assert query(db, "SELECT * FROM mobile_status ORDER BY ALL") == before
        journal = list(journal_dir_for(str(db)).glob("*.jsonl"))
        audited = query(db, "SELECT count(*) FROM provider_calls")
        if failing_step == "journal":
            assert journal
            assert audited == audit_before
        else:
            assert not journal
            assert audited[0][0] > audit_before[0][0]
        paid = len(sim.provider.ledger(billed_only=True))

        report = run_engine(sim, db, file_connect(str(db)), "after")
        assert getattr(report, "ok", False)
        assert_set_complete(db, "s", numbers)
        # The journal's answers were recovered, not bought again.
        assert billed_twice(sim) == []
        assert len(sim.provider.ledger(billed_only=True)) >= paid


@pytest.mark.slow
def test_four_concurrent_runs_on_one_file_all_succeed_without_paying_twice(db: Path) -> None:
    numbers = sample_numbers(1600, seed=24)
    # Overlapping sets: a number in two sets must still be paid for once.
    sets = {f"s{i}": numbers[i * 350 : i * 350 + 500] for i in range(4)}
    seed_sets(db, sets)
    config = SimulatorConfig(latency_ms=10, qps_limit=400, seed=3)
    with SimulatorServer(config) as sim:
        env = cli_env(sim, db, **CONCURRENT, **{settings.QPS: "380"})
        processes = [start_enrich(env, set_id) for set_id in sets]
        results = [p.communicate(timeout=240) for p in processes]
        for process, (_, stderr) in zip(processes, results, strict=True):
            assert process.returncode == 0, stderr
            assert "Could not set lock" not in stderr
        for set_id, members in sets.items():
            assert_set_complete(db, set_id, members)
        assert billed_twice(sim) == []
        refused = [e for e in sim.provider.ledger() if e.code == 4029]
        assert refused == [], "the runs together exceeded the provider's QPS limit"
        assert sim.provider.stats().max_qps <= 400


@pytest.mark.slow
def test_reports_and_sensor_reads_succeed_while_a_run_writes(db: Path) -> None:
    numbers = sample_numbers(2000, seed=25)
    seed_sets(db, {"done": numbers[:50], "busy": numbers[50:]})
    with SimulatorServer(SimulatorConfig(latency_ms=15)) as sim:
        env = cli_env(sim, db, **CONCURRENT)
        assert run_cli("enrich", "--set", "done", "--quiet", env=env).returncode == 0
        process = start_enrich(env, "busy")
        wait_for_calls(sim, 100)
        defs = dg.Definitions.merge(
            build_mobile_status_assets().definitions, dg.Definitions(resources=resources(sim, db))
        )
        sensor = defs.resolve_sensor_def(NEW_SETS_SENSOR)
        instance = dg.DagsterInstance.ephemeral()
        failures: list[str] = []
        reads = 0

        def read_while_writing() -> None:
            nonlocal reads
            while process.poll() is None:
                report = run_cli("report", env=env)
                if report.returncode != 0:
                    failures.append(report.stderr)
                context = dg.build_sensor_context(
                    instance=instance, resources={"duckdb": DuckDBResource(database=str(db))}
                )
                sensor(context)
                reads += 1

        reader = threading.Thread(target=read_while_writing)
        reader.start()
        _, stderr = process.communicate(timeout=240)
        reader.join(timeout=120)
        assert process.returncode == 0, stderr
        assert failures == []
        assert reads >= 2
        assert_set_complete(db, "busy", numbers[50:])
