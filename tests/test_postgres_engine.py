"""The engine on the PostgreSQL store, against a real server and a real simulator.

Runs on "two machines" are processes with their own working and journal directories
and nothing local in common: they share only the PostgreSQL database and the provider.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from mobile_status_dagster.core.client import AsyncMobileStatusClient, ClientSettings
from mobile_status_dagster.core.engine import EnrichmentJob, EnrichmentReport, enrich
from mobile_status_dagster.core.engine.enrich import (
    QUARANTINE,
    QuarantinedSegment,
    recover_segments,
)
from mobile_status_dagster.core.errors import DatabaseOpenError, SchemaVersionError
from mobile_status_dagster.core.store import Partition, SourceTable, Tables
from mobile_status_dagster.core.store.postgres import PostgresTarget
from mobile_status_dagster.core.store.postgres.schema import create_default_source, ensure_schema
from mobile_status_dagster.core.store.postgres.store import DURABLE_WITHIN_S, PostgresStore
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorConfig, SimulatorServer
from tests.support import billable, billed_twice, sample_numbers
from tests.test_hardening_settings import plant_segment

ROOT = Path(__file__).resolve().parent.parent
WORKER_CONCURRENCY = 16


def seed_pg_sets(url: str, sets: dict[str, list[str]], *, schema: str | None = None) -> None:
    """The sets as rows of ``number_sets`` in PostgreSQL (through COPY), in ``schema`` if
    given (created), else in the search_path."""
    with psycopg.connect(url, autocommit=True) as conn:
        if schema is not None:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(f'SET search_path TO "{schema}"')
        create_default_source(conn)
        with conn.cursor().copy("COPY number_sets (set_id, mobile) FROM STDIN") as copy:
            for set_id, numbers in sets.items():
                for number in numbers:
                    copy.write_row((set_id, number))


def pg_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def assert_published(url: str, set_id: str, numbers: list[str]) -> None:
    """One published row per input row, every valid number answered."""
    rows = pg_rows(
        url,
        "SELECT count(*), count(*) FILTER (WHERE valid AND status_code IS NULL) "
        f"FROM mobile_status WHERE set_id = '{set_id}'",
    )
    assert rows == [(len(numbers), 0)]


def enrich_in_process(
    url: str, sim: SimulatorServer, journal: Path, run_id: str, *sets: str
) -> EnrichmentReport:
    async def go() -> EnrichmentReport:
        store = PostgresStore(PostgresTarget(url), journal)
        job = EnrichmentJob(
            source=SourceTable(), partitions=tuple(Partition(s) for s in sets), run_id=run_id
        )
        settings = ClientSettings(base_url=sim.base_url, token=DEMO_TOKEN, max_concurrency=8)
        async with AsyncMobileStatusClient(settings) as client:
            return await enrich(job, client=client, store=store)

    return asyncio.run(go())


def start_machine(
    url: str, sim: SimulatorServer, home: Path, run_id: str, *sets: str
) -> subprocess.Popen[str]:
    """A worker process in its own directory, with its own journal and Dagster home."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": str(home)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.pg_worker",
            url,
            sim.base_url,
            run_id,
            str(home / "j"),
            *sets,
        ],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_run_publishes_every_set_and_a_rerun_pays_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    numbers = billable(sample_numbers(130, seed=31), seed=4)[:120]  # a rerun finds all fresh
    sets = {"a": numbers[:80], "b": numbers[50:]}  # 30 numbers in both sets
    seed_pg_sets(postgres_url, sets)
    with SimulatorServer(SimulatorConfig(latency_ms=0, seed=4)) as sim:
        report = enrich_in_process(postgres_url, sim, tmp_path / "j", "r1", "a", "b")
        assert report.ok, report.stop_message()
        for set_id, members in sets.items():
            assert_published(postgres_url, set_id, members)
        assert billed_twice(sim) == []
        calls = len(sim.provider.ledger())
        again = enrich_in_process(postgres_url, sim, tmp_path / "other", "r2", "a", "b")
        assert again.ok
        assert again.sent == 0
        assert len(sim.provider.ledger()) == calls
    audited = pg_rows(postgres_url, "SELECT count(*) FROM provider_calls WHERE billed")
    assert audited == [(len(sim.provider.ledger(billed_only=True)),)]
    assert not list((tmp_path / "j").glob("*.jsonl")), "journal left unfolded"


@pytest.mark.slow
def test_two_machines_take_turns_and_nothing_is_billed_twice(
    postgres_url: str, tmp_path: Path
) -> None:
    numbers = sample_numbers(900, seed=32)
    sets = {"m1": numbers[:600], "m2": numbers[300:]}  # overlapping: 300 shared
    seed_pg_sets(postgres_url, sets)
    with SimulatorServer(SimulatorConfig(latency_ms=10, jitter_ms=5, seed=5)) as sim:
        machines = [
            start_machine(postgres_url, sim, tmp_path / f"machine-{i}", f"run-{i}", set_id)
            for i, set_id in enumerate(sets)
        ]
        for machine in machines:
            _, stderr = machine.communicate(timeout=240)
            assert machine.returncode == 0, stderr
        for set_id, members in sets.items():
            assert_published(postgres_url, set_id, members)
        assert billed_twice(sim) == []


@pytest.mark.slow
def test_sigkill_on_one_machine_and_the_other_finishes_paying_only_what_was_in_flight(
    postgres_url: str, tmp_path: Path
) -> None:
    numbers = sample_numbers(1500, seed=33)
    seed_pg_sets(postgres_url, {"s": numbers})
    rng = random.Random(7)
    kills = 0
    latency_ms = 20
    with SimulatorServer(SimulatorConfig(latency_ms=latency_ms, jitter_ms=10, seed=6)) as sim:
        for attempt in range(3):
            before = len(sim.provider.ledger())
            machine = start_machine(postgres_url, sim, tmp_path / "a", f"killed-{attempt}", "s")
            deadline = time.monotonic() + 60
            while len(sim.provider.ledger()) < before + rng.randrange(50, 300):
                assert time.monotonic() < deadline, "the run never reached the provider"
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.3))  # anywhere: mid-call, mid-fold
            machine.send_signal(signal.SIGKILL)
            machine.wait(timeout=30)
            kills += 1
        # The killed machine's journal is gone with it: the other machine finishes.
        final = start_machine(postgres_url, sim, tmp_path / "b", "finisher", "s")
        _, stderr = final.communicate(timeout=240)
        assert final.returncode == 0, stderr
        assert_published(postgres_url, "s", numbers)
        # Paid twice at most: the answers in flight at each kill, and those that arrived
        # in the last 100 ms (at most concurrency × 100 ms / latency each).
        per_kill = WORKER_CONCURRENCY + WORKER_CONCURRENCY * DURABLE_WITHIN_S * 1000 / (
            latency_ms - 10
        )
        assert len(billed_twice(sim)) <= kills * per_kill, len(billed_twice(sim))
        billed = {e.order_number for e in sim.provider.ledger(billed_only=True)}
        audited = {
            str(r[0])
            for r in pg_rows(postgres_url, "SELECT order_number FROM provider_calls WHERE billed")
        }
        assert audited <= billed
        assert len(billed - audited) <= kills * per_kill


def test_recovery_folds_a_good_leftover_and_quarantines_a_poisoned_one(
    postgres_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "j"
    journal.mkdir(mode=0o700)
    good = plant_segment(journal, "genuine", "13900000009", "GOOD", price="0.05")
    poisoned = plant_segment(journal, "poisoned", "13900000008", "BAD")  # price 1e13
    store = PostgresStore(PostgresTarget(postgres_url), journal)
    quarantined: list[QuarantinedSegment] = []
    assert recover_segments(store, on_quarantine=quarantined.append) == 1
    assert [q.segment for q in quarantined] == [poisoned.name]
    assert (journal / QUARANTINE / poisoned.name).exists()
    assert not good.exists()
    assert pg_rows(postgres_url, "SELECT order_number FROM provider_calls") == [("GOOD",)]
    assert pg_rows(postgres_url, "SELECT mobile FROM mobile_status_latest") == [("13900000009",)]


def test_the_password_is_in_no_error_or_repr(postgres_url: str, tmp_path: Path) -> None:
    target = PostgresTarget(postgres_url)
    password = target.password
    assert password
    assert password not in repr(target)
    assert password not in str(target)
    wrong = PostgresTarget(postgres_url.replace(password, password + "x"))
    with pytest.raises(DatabaseOpenError) as caught:
        wrong.open()
    assert password not in str(caught.value)
    assert "********" in str(caught.value)


def test_tables_of_a_newer_version_are_refused_and_left_alone(postgres_url: str) -> None:
    with PostgresTarget(postgres_url).connect()() as conn:
        ensure_schema(conn, Tables())
        conn.execute("UPDATE mobile_status_schema SET version = 99")
        with pytest.raises(SchemaVersionError, match="newer"):
            ensure_schema(conn, Tables())
    assert pg_rows(postgres_url, "SELECT version FROM mobile_status_schema") == [(99,)]
