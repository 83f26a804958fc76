""" "Two machines" through the real command line: ``mobile-status enrich`` processes on one
PostgreSQL database (``$MOBILE_STATUS_STORE``) and one simulator, each with its own working
directory, ``DAGSTER_HOME`` and temporary directory (so its own journal), sharing no local
file. They take turns and nothing is billed twice; one killed with SIGKILL again and again
leaves the other to finish, paying twice at most what was in flight at each kill plus the
answers of the last 100 ms (:data:`DURABLE_WITHIN_S`).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store.postgres.store import DURABLE_WITHIN_S
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.simulator import SimulatorConfig, SimulatorServer
from tests.support import (
    COMMAND,
    billable,
    billed_twice,
    cli_env,
    make_dagster_home,
    sample_numbers,
)
from tests.test_postgres_engine import assert_published, pg_rows, seed_pg_sets

CONCURRENCY = 16


@dataclass(frozen=True)
class Machine:
    """A directory standing for a machine: its working directory, Dagster home and tmp."""

    root: Path

    @classmethod
    def make(cls, root: Path) -> Machine:
        make_dagster_home(root / "dagster_home")
        (root / "tmp").mkdir()
        return cls(root)

    def env(self, sim: SimulatorServer, url: str) -> dict[str, str]:
        return cli_env(
            sim,
            self.root / "never.duckdb",  # $MOBILE_STATUS_DB: unused when the store is PostgreSQL
            **{
                settings.STORE: url,
                settings.MAX_CONCURRENCY: str(CONCURRENCY),
                "DAGSTER_HOME": str(self.root / "dagster_home"),
                "TMPDIR": str(self.root / "tmp"),
            },
        )

    def enrich(self, sim: SimulatorServer, url: str, *sets: str) -> subprocess.Popen[str]:
        args = [arg for s in sets for arg in ("--set", s)]
        return subprocess.Popen(
            [str(COMMAND), "enrich", *args, "--quiet"],
            cwd=self.root,
            env=self.env(sim, url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def finish(process: subprocess.Popen[str], timeout: float = 240) -> None:
    _, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr


@pytest.mark.slow
def test_two_cli_machines_take_turns_and_nothing_is_billed_twice(
    postgres_url: str, tmp_path: Path
) -> None:
    mobiles = sample_numbers(900, seed=61)
    sets = {"east": [*mobiles[:600], "not a number"], "west": mobiles[300:]}  # 300 shared
    seed_pg_sets(postgres_url, sets)
    machines = [Machine.make(tmp_path / name) for name in ("machine-a", "machine-b")]
    with SimulatorServer(SimulatorConfig(latency_ms=10, jitter_ms=5, seed=8)) as sim:
        running = [
            m.enrich(sim, postgres_url, set_id) for m, set_id in zip(machines, sets, strict=True)
        ]
        for process in running:
            finish(process)
        for set_id, members in sets.items():
            assert_published(postgres_url, set_id, members)
        # Every valid number answered, every definitive answer paid once: the 300 shared
        # numbers by one machine only. (A number the provider answered "unknown", unbilled,
        # is asked again by the other set's run: an unknown is no answer to keep.)
        ledger = sim.provider.ledger()
        assert {str(e.mobile) for e in ledger} == set(mobiles)
        assert sorted(str(e.mobile) for e in ledger if e.billed) == sorted(billable(mobiles, 8))
        assert all(e.check == Status.UNKNOWN for e in ledger if not e.billed)
        assert billed_twice(sim) == []
        audited = pg_rows(postgres_url, "SELECT count(*) FROM provider_calls")
        assert audited == [(len(ledger),)]
    for machine in machines:
        assert not (machine.root / "never.duckdb").exists()
        # Each journaled in its own temporary directory: nothing local was shared.
        assert list((machine.root / "tmp").glob("mobile_status-*/*")), machine.root


@pytest.mark.slow
def test_sigkill_one_cli_machine_repeatedly_and_the_other_finishes(
    postgres_url: str, tmp_path: Path
) -> None:
    mobiles = sample_numbers(1500, seed=62)
    seed_pg_sets(postgres_url, {"s": mobiles})
    killed, finisher = Machine.make(tmp_path / "killed"), Machine.make(tmp_path / "finisher")
    rng = random.Random(11)
    latency_ms = 20
    kills = 0
    with SimulatorServer(SimulatorConfig(latency_ms=latency_ms, jitter_ms=10, seed=9)) as sim:
        for _ in range(3):
            before = len(sim.provider.ledger())
            process = killed.enrich(sim, postgres_url, "s")
            deadline = time.monotonic() + 90
            while len(sim.provider.ledger()) < before + rng.randrange(50, 300):
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the run never reached the provider"
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.3))  # anywhere: mid-call, mid-fold
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
            kills += 1
        # The killed machine's journal stays on it: the other machine finishes the set.
        finish(finisher.enrich(sim, postgres_url, "s"))
        assert_published(postgres_url, "s", mobiles)
        assert {str(e.mobile) for e in sim.provider.ledger()} == set(mobiles)
        # Paid twice at most: the answers in flight at each kill, and those that arrived
        # in the last 100 ms (at most concurrency × 100 ms / latency each).
        per_kill = CONCURRENCY + CONCURRENCY * DURABLE_WITHIN_S * 1000 / (latency_ms - 10)
        assert len(billed_twice(sim)) <= kills * per_kill, len(billed_twice(sim))
        billed = {e.order_number for e in sim.provider.ledger(billed_only=True)}
    audited = {
        str(r[0])
        for r in pg_rows(postgres_url, "SELECT order_number FROM provider_calls WHERE billed")
    }
    assert audited <= billed
    assert len(billed - audited) <= kills * per_kill
