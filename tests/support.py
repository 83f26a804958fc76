"""Shared helpers for tests: sample numbers, the simulator's truth and ledger, seeded DuckDB
files, resources, runs, CLI environments and ``dg`` projects."""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.cli.runs import RunOutcome, materialize_sets
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store.schema import SOURCE_DDL
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import MobileStatusAssets, build_mobile_status_assets
from mobile_status_dagster.integration.resources import MobileStatusResource
from mobile_status_dagster.simulator import DEMO_TOKEN, LedgerEntry, SimulatorServer, number_truth

PRICE = "0.05"
COMMAND = Path(sys.executable).with_name("mobile-status")
DG = Path(sys.executable).with_name("dg")
ROTATED_TOKEN = "ROTATEDTOKEN00000000000000000000"
"""The token the provider switches to in :func:`revoke_token_after` (not the demo token)."""
DEFINITIONS_PY = textwrap.dedent(
    """\
    from pathlib import Path

    import dagster as dg


    @dg.definitions
    def defs() -> dg.Definitions:
        return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    """
)
"""A ``dg`` project's ``definitions.py``: everything in its ``defs`` folder."""


def sample_numbers(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct valid, allocated mobile numbers, reproducibly."""
    rng = random.Random(seed)
    prefixes = ("139", "138", "135", "186", "185", "189", "133", "150", "177", "198")
    out: dict[str, None] = {}
    while len(out) < count:
        out[rng.choice(prefixes) + f"{rng.randrange(10**8):08d}"] = None
    return list(out)


def numbers_with_status(
    check: int, count: int, seed: int = 0, pool: Iterable[str] | None = None
) -> list[str]:
    """The first ``count`` numbers of ``pool`` the simulator (with ``seed``) answers ``check``.

    ``pool`` defaults to 20,000 :func:`sample_numbers`.
    """
    candidates = sample_numbers(20_000, seed=99) if pool is None else pool
    found = [m for m in candidates if truth(m, seed) == check]
    assert len(found) >= count
    return found[:count]


def truth(mobile: str, seed: int = 0) -> int:
    """The status the simulator (with ``seed``) answers for ``mobile``."""
    return number_truth(mobile, seed)[0]


def billable(mobiles: Iterable[str], seed: int = 0) -> list[str]:
    """The numbers whose answer is billed (status other than unknown), in order."""
    return [m for m in mobiles if truth(m, seed) != Status.UNKNOWN]


def asked(entries: Iterable[LedgerEntry]) -> list[str]:
    """The numbers of ledger entries, sorted (repeats kept)."""
    return sorted(str(e.mobile) for e in entries)


def requests_since(sim: SimulatorServer, mark: int) -> list[LedgerEntry]:
    """Ledger entries recorded after the first ``mark`` ones."""
    return sim.provider.ledger()[mark:]


def billed_twice(sim: SimulatorServer) -> list[str]:
    """The numbers the provider billed more than once."""
    counts = collections.Counter(e.mobile for e in sim.provider.ledger(billed_only=True))
    return [str(m) for m, n in counts.items() if n > 1]


def assert_nothing_billed_twice(sim: SimulatorServer) -> None:
    """No number was billed more than once."""
    assert billed_twice(sim) == []


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


def one_run(outcomes: Sequence[RunOutcome]) -> RunOutcome:
    """The only outcome of ``outcomes`` (the sets ran as one contiguous range)."""
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` against ``db`` (a short read-write connection)."""
    with duckdb.connect(str(db)) as conn:
        return conn.execute(sql, list(params)).fetchall()


def base_env(**changes: str) -> dict[str, str]:
    """The caller's environment without Dagster or mobile-status settings, plus ``changes``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOBILE_STATUS_", "DAGSTER_"))}
    return env | changes


def cli_env(sim: SimulatorServer, db: Path, **changes: str) -> dict[str, str]:
    """:func:`base_env` pointing the CLI at ``sim`` and ``db`` (demo token, :data:`PRICE`)."""
    return base_env(
        **{
            settings.DB: str(db),
            settings.BASE_URL: sim.base_url,
            settings.TOKEN: DEMO_TOKEN,
            settings.UNIT_PRICE: PRICE,
        }
        | changes
    )


def run_cli(
    *args: str,
    env: Mapping[str, str],
    cwd: Path | None = None,
    module: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``mobile-status ARGS`` (the console script, or ``python -m``)."""
    command = [sys.executable, "-m", "mobile_status_dagster"] if module else [str(COMMAND)]
    return subprocess.run(
        [*command, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_dg(
    *args: str, cwd: Path, env: Mapping[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the ``dg`` command next to this Python, in ``cwd``."""
    return subprocess.run(
        [str(DG), *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
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


@contextlib.contextmanager
def revoke_token_after(
    sim: SimulatorServer, calls: int, new_token: str = ROTATED_TOKEN
) -> Iterator[None]:
    """While open, the provider rotates the account token to ``new_token`` after ``calls``
    more requests (:func:`rotating_decide`); on exit its own ``decide`` is back."""
    provider = sim.provider
    decide = provider.decide
    provider.decide = rotating_decide(sim, calls, new_token)  # type: ignore[method-assign]
    try:
        yield
    finally:
        provider.decide = decide  # type: ignore[method-assign]


def backdate(
    db: Path, mobiles: Sequence[str], days: float, *, prefix: str = "", audit: bool = False
) -> None:
    """Make the cached answers of ``mobiles`` older by ``days``.

    ``prefix`` names the instance's tables (``"crm_"``: ``crm_mobile_status_latest``);
    with ``audit`` the numbers' audit rows (``provider_calls.requested_at``) age too.
    """
    columns = [("mobile_status_latest", "checked_at")]
    if audit:
        columns.append(("provider_calls", "requested_at"))
    with duckdb.connect(str(db)) as conn:
        for table, column in columns:
            conn.execute(
                f"UPDATE {prefix}{table} SET {column} = {column} - to_seconds(?) "
                "WHERE mobile IN (SELECT unnest(CAST(? AS VARCHAR[])))",
                [int(days * 86400), list(mobiles)],
            )


def make_dagster_home(path: Path) -> Path:
    """A fresh ``DAGSTER_HOME`` at ``path`` (created, telemetry off)."""
    path.mkdir(parents=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    return path


def make_dg_project(directory: Path, package: str) -> Path:
    """A minimal ``dg`` project in ``directory`` whose root module is ``package``.

    Its ``definitions.py`` (:data:`DEFINITIONS_PY`) loads the ``defs`` folder; add
    components with :func:`write_component`.
    """
    (directory / package / "defs").mkdir(parents=True)
    (directory / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "{package}"
            version = "0.1.0"
            [tool.dg]
            directory_type = "project"
            [tool.dg.project]
            root_module = "{package}"
            """
        )
    )
    (directory / package / "__init__.py").write_text("")
    (directory / package / "defs" / "__init__.py").write_text("")
    (directory / package / "definitions.py").write_text(DEFINITIONS_PY)
    return directory


def write_component(project: Path, package: str, name: str, yaml: str) -> Path:
    """Write ``defs/<name>/defs.yaml`` (``yaml``, dedented) in ``project``."""
    folder = project / package / "defs" / name
    folder.mkdir(parents=True)
    path = folder / "defs.yaml"
    path.write_text(textwrap.dedent(yaml))
    return path


@dataclass(frozen=True)
class DemoRun:
    """One ``mobile-status demo`` run: its directory and what it printed."""

    directory: Path
    result: subprocess.CompletedProcess[str]
