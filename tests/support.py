"""Shared helpers for tests: sample numbers, seeded DuckDB files, resources, runs."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.cli.runs import RunOutcome, materialize_sets
from mobile_status_dagster.core.store.schema import SOURCE_DDL
from mobile_status_dagster.integration.assets import MobileStatusAssets, build_mobile_status_assets
from mobile_status_dagster.integration.resources import MobileStatusResource
from mobile_status_dagster.simulator import DEMO_TOKEN, SimulatorServer, number_truth

PRICE = "0.05"
COMMAND = Path(sys.executable).with_name("mobile-status")


def sample_numbers(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct valid, allocated mobile numbers, reproducibly."""
    rng = random.Random(seed)
    prefixes = ("139", "138", "135", "186", "185", "189", "133", "150", "177", "198")
    out: dict[str, None] = {}
    while len(out) < count:
        out[rng.choice(prefixes) + f"{rng.randrange(10**8):08d}"] = None
    return list(out)


def numbers_with_status(check: int, count: int, seed: int = 0) -> list[str]:
    """Numbers the simulator (with ``seed``) answers with status ``check``."""
    found = [m for m in sample_numbers(20_000, seed=99) if number_truth(m, seed)[0] == check]
    assert len(found) >= count
    return found[:count]


def seed_sets(db: Path, sets: Mapping[str, Iterable[str | None]]) -> None:
    """Append rows to ``number_sets`` in ``db`` (created if needed)."""
    with duckdb.connect(str(db)) as conn:
        conn.execute(SOURCE_DDL)
        for set_id, numbers in sets.items():
            rows = [(set_id, n) for n in numbers]
            if rows:
                conn.executemany("INSERT INTO number_sets (set_id, mobile) VALUES (?, ?)", rows)


def resources(sim: SimulatorServer, db: Path, **api: Any) -> dict[str, Any]:
    """``mobile_status_api`` pointed at ``sim`` (or ``base_url=``) and ``duckdb`` at ``db``."""
    return resources_for(api.pop("base_url", sim.base_url), db, **api)


def resources_for(base_url: str, db: Path, **api: Any) -> dict[str, Any]:
    """``mobile_status_api`` pointed at ``base_url`` and ``duckdb`` at ``db``."""
    settings: dict[str, Any] = {
        "base_url": base_url,
        "token": DEMO_TOKEN,
        "unit_price": PRICE,
        "max_retries": 2,
        "timeout_s": 5.0,
    } | api
    return {
        "mobile_status_api": MobileStatusResource(**settings),
        "duckdb": DuckDBResource(database=str(db)),
    }


def run_sets(
    sim: SimulatorServer,
    db: Path,
    set_ids: Sequence[str],
    *,
    instance: dg.DagsterInstance | None = None,
    built: MobileStatusAssets | None = None,
    force_refresh: bool = False,
    max_billed: int | None = None,
    **api: Any,
) -> list[RunOutcome]:
    """Materialize ``mobile_status`` for ``set_ids`` through Dagster, as the CLI does."""
    return materialize_sets(
        built or build_mobile_status_assets(),
        resources=resources(sim, db, **api),
        instance=instance or dg.DagsterInstance.ephemeral(),
        set_ids=set_ids,
        force_refresh=force_refresh,
        max_billed=max_billed,
        log_level="WARNING",
    )


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` against ``db`` (a short read-write connection)."""
    with duckdb.connect(str(db)) as conn:
        return conn.execute(sql, list(params)).fetchall()


def base_env(**changes: str) -> dict[str, str]:
    """The caller's environment without Dagster or mobile-status settings, plus ``changes``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOBILE_STATUS_", "DAGSTER_"))}
    return env | changes


def run_cli(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, module: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``mobile-status ARGS`` (the console script, or ``python -m``)."""
    command = [sys.executable, "-m", "mobile_status_dagster"] if module else [str(COMMAND)]
    return subprocess.run(
        [*command, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rotating_decide(sim: SimulatorServer, calls: int, new_token: str) -> Callable[..., Any]:
    """The simulator's ``decide``, changed so the account token rotates after ``calls``."""
    provider = sim.provider
    decide = provider.decide
    counter = itertools.count(1)

    def wrapped(mobile: str | None, token: str | None) -> Any:
        if next(counter) == calls + 1:
            provider.update_config(token=new_token)
        return decide(mobile, token)

    return wrapped


def backdate(db: Path, mobiles: Sequence[str], days: float) -> None:
    """Make the cached answers of ``mobiles`` older by ``days``."""
    with duckdb.connect(str(db)) as conn:
        conn.execute(
            "UPDATE mobile_status_latest SET checked_at = checked_at - to_seconds(?) "
            "WHERE mobile IN (SELECT unnest(CAST(? AS VARCHAR[])))",
            [int(days * 86400), list(mobiles)],
        )
