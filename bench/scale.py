"""Scenarios 10–13, scale: a run costs its delta; publishing 10M rows; where one DuckDB file
ends; the three asset checks at 10M published rows.

Set-up data is written in SQL straight into the library's tables (source, cache, audit,
published), consistent with one another so that the asset checks pass; everything measured
goes through the library (its CLI, ``materialize_sets``, ``publish_partitions`` and the
check functions).
"""

from __future__ import annotations

import functools
import inspect
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx

from bench.data import numbers_sql, seed_messy_set
from bench.pipeline import _workdir
from bench.report import Figure
from bench.simulator_process import SimulatorURL, simulator_process
from bench.worker import peak_rss_until_exit, plan_in_own_process
from mobile_status_dagster.cli.runs import RunOutcome, materialize_sets
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.numbers import PREFIX_LENGTH
from mobile_status_dagster.core.status import SERVING_OPERATORS
from mobile_status_dagster.core.store import audit_checks
from mobile_status_dagster.core.store.audit_checks import CheckOutcome
from mobile_status_dagster.core.store.connection import DEFAULT_MEMORY_LIMIT, connect_with_retry
from mobile_status_dagster.core.store.number_sql import (
    PREFIX_TABLE,
    quote_identifier,
    register_number_rules,
)
from mobile_status_dagster.core.store.publish import publish_partitions
from mobile_status_dagster.core.store.schema import (
    DEFAULT_TABLES,
    SOURCE_DDL,
    ensure_schema,
    status_label_sql,
)
from mobile_status_dagster.core.store.source import Partition, SourceTable
from mobile_status_dagster.core.store.summaries import rebuild_charges, rebuild_summary
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import build_mobile_status_assets
from mobile_status_dagster.simulator import DEMO_TOKEN, number_truth
from tests.support import COMMAND, PRICE, base_env, resources_for

SEED = 0
"""The simulator's seed; the new numbers are chosen so that none answers unknown under it."""
SETS = 20
SEED_RUN = "seed-run-"
CURRENCY = "CNY"
PHASES = ("wait", "recover", "plan", "check", "publish")
PHASE_METADATA = "mobile_status/run_<phase>_seconds"
NEW_START = 90_000_000
"""First ``i`` of ``numbers_sql`` for the new numbers: above every seeded number."""

_PREFIXES = f"temp.main.{quote_identifier(PREFIX_TABLE)}"
_SERVING = ", ".join(f"'{op}'" for op in sorted(SERVING_OPERATORS))
_STATUS = (  # a realistic mix of billed statuses: 83 % online
    "CASE WHEN i % 100 < 83 THEN 1 WHEN i % 100 < 88 THEN 2 WHEN i % 100 < 91 THEN 3 "
    "WHEN i % 100 < 96 THEN 4 ELSE 5 END"
)


# -- set-up: consistent source, cache, audit and published rows, in SQL ----------------


def _set_key(k: int) -> str:
    return f"s{k:02}"


def _answers_sql(start: int, stop: int, set_sql: str, run_sql: str) -> str:
    """One billed answer per number ``i`` in ``[start, stop)``, as the library records it.

    Columns: ``m``, ``set_id`` (``set_sql`` of ``i``), ``run_id`` (``run_sql`` of ``i``),
    ``st``, ``label``, ``op`` (the serving operator: the number's network), ``po`` and
    ``no`` (prefix and network operators, from the library's prefix table),
    ``order_number`` and ``checked_at`` (a day ago, a microsecond apart; parameter
    ``$base``). Call :func:`register_number_rules` first.
    """
    return f"""
        SELECT g.m, {set_sql} AS set_id, {run_sql} AS run_id,
               {_STATUS} AS st, {status_label_sql(_STATUS)} AS label,
               CASE WHEN p.network_operator IN ({_SERVING}) THEN p.network_operator
                    ELSE 'CM' END AS op,
               p.prefix_operator AS po, p.network_operator AS no,
               md5(g.m) AS order_number,
               CAST($base AS TIMESTAMPTZ) + to_microseconds(i - {start}) AS checked_at
        FROM ({numbers_sql(start, stop)}) g
        LEFT JOIN {_PREFIXES} p ON p.prefix = substr(g.m, 1, {PREFIX_LENGTH})
    """


def _seed_answers(
    conn: duckdb.DuckDBPyConnection,
    start: int,
    stop: int,
    set_sql: str,
    run_sql: str,
    *,
    published: bool,
) -> None:
    """Fresh cache rows, their billed audit rows and (``published``) their published rows."""
    register_number_rules(conn)
    answers = _answers_sql(start, stop, set_sql, run_sql)
    params: dict[str, Any] = {"base": datetime.now(UTC) - timedelta(days=1)}
    t = DEFAULT_TABLES
    conn.execute(
        f"INSERT INTO {t.cache} SELECT m, st, label, op, order_number, 2000, checked_at, run_id "
        f"FROM ({answers})",
        params,
    )
    conn.execute(
        f"""
        INSERT INTO {t.audit}
        SELECT order_number, m, 2000, $message, st, op, true, false, CAST($price AS DECIMAL(18, 6)),
               $currency, set_id, run_id, checked_at - INTERVAL 40 MILLISECOND, 40.0, 1, 200,
               NULL, 'new'
        FROM ({answers})
        """,
        params | {"message": "查询成功", "price": PRICE, "currency": CURRENCY},
    )
    if published:
        # What publish.py's _insert_sql writes for a valid number answered from the cache.
        conn.execute(
            f"""
            INSERT INTO {t.published}
            SELECT set_id, m, m, true, NULL, st, label, op, po,
                   CASE WHEN no IN ({_SERVING}) THEN op <> no END,
                   order_number, checked_at, 'cache', run_id
            FROM ({answers}) WHERE set_id IS NOT NULL
            """,
            params,
        )


@dataclass(frozen=True)
class SeededSets:
    """A database of ``sets`` sets of ``set_size`` distinct numbers, all fresh in the cache."""

    db: Path
    sets: int
    set_size: int
    published: bool
    setup_s: float

    @property
    def rows(self) -> int:
        return self.sets * self.set_size

    @property
    def set_ids(self) -> list[str]:
        return [_set_key(k) for k in range(self.sets)]


def _seed_sets(sets: int, set_size: int, *, published: bool) -> SeededSets:
    """Sets ``s00``, ``s01``, … with source, cache, audit and charges rows, one seed run each;
    with ``published`` also their published rows and the summary."""
    db = _workdir() / f"sets-{sets}x{set_size}.duckdb"
    started = time.perf_counter()
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        conn.execute(SOURCE_DDL)
        set_sql = f"'s' || lpad(CAST(i // {set_size} AS VARCHAR), 2, '0')"
        run_sql = f"'{SEED_RUN}' || CAST(i // {set_size} AS VARCHAR)"
        conn.execute(
            f"INSERT INTO number_sets (set_id, mobile, loaded_at) "
            f"SELECT {set_sql}, m, now() - INTERVAL 2 DAY FROM ({numbers_sql(0, sets * set_size)})"
        )
        _seed_answers(conn, 0, sets * set_size, set_sql, run_sql, published=published)
        if published:
            rebuild_summary(conn, tables=DEFAULT_TABLES)
        rebuild_charges(conn, tables=DEFAULT_TABLES)
        conn.execute("CHECKPOINT")
    seconds = time.perf_counter() - started
    _note(f"seeded {sets} x {set_size:,} numbers (published: {published}) in {seconds:.1f} s")
    return SeededSets(db, sets, set_size, published, seconds)


@functools.cache
def _big(quick: bool) -> SeededSets:
    """BIG: 20 published sets of 500,000 numbers (quick: 5,000), shared by delta and checks."""
    return _seed_sets(SETS, 5_000 if quick else 500_000, published=True)


def _new_numbers(start: int, count: int) -> list[str]:
    """``count`` distinct valid numbers from ``numbers_sql(start, …)`` that the simulator
    (seed :data:`SEED`) answers with a billed status: a run over them bills exactly
    ``count``, and a rerun finds every answer fresh (unknown answers are never fresh)."""
    with duckdb.connect() as conn:
        rows = conn.execute(f"SELECT m FROM ({numbers_sql(start, start + 2 * count + 100)})")
        candidates = [str(r[0]) for r in rows.fetchall()]
    picked = [m for m in candidates if number_truth(m, SEED)[0] != 0][:count]
    assert len(picked) == count
    return picked


def _load_set(db: Path, set_id: str, numbers: Sequence[str]) -> None:
    """A new set in the source table (the user's load; set-up, not measured)."""
    with duckdb.connect(str(db)) as conn:
        conn.execute(SOURCE_DDL)
        conn.execute(
            "INSERT INTO number_sets (set_id, mobile) SELECT $set_id, unnest($numbers)",
            {"set_id": set_id, "numbers": list(numbers)},
        )


def _note(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# -- measuring through the library -----------------------------------------------------


def _stats(url: SimulatorURL) -> tuple[int, int]:
    """The simulator's ``(requests, billed)`` counters."""
    stats = httpx.get(url + "/_sim/stats", headers=url.admin_headers).json()
    return int(stats["requests"]), int(stats["billed"])


def _cli_env(url: str, db: Path) -> dict[str, str]:
    return base_env(
        **{
            settings.DB: str(db),
            settings.BASE_URL: url,
            settings.TOKEN: DEMO_TOKEN,
            settings.UNIT_PRICE: PRICE,
        }
    )


def _cli_enrich(url: str, db: Path, set_id: str) -> float:
    """Seconds of ``mobile-status enrich --set SET``, interpreter and Dagster start-up included."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(COMMAND), "enrich", "--set", set_id, "--quiet"],
        env=_cli_env(url, db),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"enrich --set {set_id} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return seconds


def _cli_enrich_peak(url: str, db: Path, set_id: str) -> tuple[float, float]:
    """``(seconds, peak RSS in MB)`` of ``mobile-status enrich --set SET`` (VmHWM, polled)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(COMMAND), "enrich", "--set", set_id, "--quiet"],
        env=_cli_env(url, db),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    peak = peak_rss_until_exit(process)
    seconds = time.perf_counter() - started
    assert process.stderr is not None
    errors = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"enrich --set {set_id} failed: {errors[-2000:]}")
    return seconds, peak


@dataclass(frozen=True)
class DagsterRun:
    """One in-process run through ``materialize_sets``, read back from its event log."""

    outcome: RunOutcome
    seconds: float
    steps_s: dict[str, float]
    """STEP_START → STEP_SUCCESS seconds per step key, in the order the steps started."""
    phases_s: dict[str, float] | None
    """``mobile_status/run_<phase>_seconds`` of the enrichment's materialization, if written."""
    checks_passed: int
    checks: int


def _materialize(url: str, db: Path, set_ids: Sequence[str]) -> DagsterRun:
    """Materialize ``set_ids`` in one run (they must be adjacent) with an instance read after."""
    built = build_mobile_status_assets()
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    runs = materialize_sets(
        built,
        resources=resources_for(url, db),
        instance=instance,
        set_ids=set_ids,
        log_level="WARNING",
    )
    seconds = time.perf_counter() - started
    assert len(runs) == 1, runs
    (run,) = runs
    if not run.success:
        raise RuntimeError(f"the run of {list(set_ids)[:3]}… failed: {run.message}")
    starts: dict[str, float] = {}
    steps: dict[str, float] = {}
    passed = checks = 0
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS and event.step_key in starts:
            steps[event.step_key] = entry.timestamp - starts[event.step_key]
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            checks += 1
            passed += bool(getattr(event.event_specific_data, "passed", False))
    ordered = {key: steps[key] for key in starts if key in steps}
    found = {p: run.metadata.get(f"mobile_status/run_{p}_seconds") for p in PHASES}
    phases = {p: float(v) for p, v in found.items() if isinstance(v, int | float)} or None
    return DagsterRun(run, seconds, ordered, phases, passed, checks)


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


def _breakdown(scenario: str, label: str, run: DagsterRun) -> list[Figure]:
    """Report-only figures: each step of ``run``, and each phase of its enrichment."""
    figures = [
        Figure(scenario, f"{label}, step `{step}`", seconds, "s", target="report")
        for step, seconds in run.steps_s.items()
    ]
    for phase, seconds in (run.phases_s or {}).items():
        figures.append(
            Figure(scenario, f"{label}, enrichment phase `{phase}`", seconds, "s", target="report")
        )
    return figures


# -- 10: a run costs what its delta costs ----------------------------------------------


@dataclass(frozen=True)
class _DeltaResult:
    """The three runs of the delta scenario on one database, with the provider's counts."""

    cli_s: float
    cli_calls: int
    cli_billed: int
    run: DagsterRun
    run_calls: int
    run_billed: int
    rerun_s: float
    rerun_calls: int


_DELTA_RUNS: dict[bool, str] = {}
"""Run id of the delta scenario's 1,000-number Dagster run on BIG, by ``quick``."""


def _delta_runs(url: SimulatorURL, db: Path, size: int) -> _DeltaResult:
    """(a) ``enrich`` of ``size`` new numbers, (b) a Dagster run of ``size`` others,
    (c) ``enrich`` of the first set again (every answer fresh)."""
    _load_set(db, "n1", _new_numbers(NEW_START, size))
    _load_set(db, "n2", _new_numbers(NEW_START + 1_000_000, size))
    requests, billed = _stats(url)
    cli_s = _cli_enrich(url, db, "n1")
    after = _stats(url)
    run = _materialize(url, db, ["n2"])
    again = _stats(url)
    rerun_s = _cli_enrich(url, db, "n1")
    return _DeltaResult(
        cli_s,
        after[0] - requests,
        after[1] - billed,
        run,
        again[0] - after[0],
        again[1] - after[1],
        rerun_s,
        _stats(url)[0] - again[0],
    )


def delta(quick: bool) -> list[Figure]:
    """Scenario 10: one new set's run on a 1,000-row warehouse vs a 10,000,000-row one."""
    size = 100 if quick else 1_000
    small = _seed_sets(1, size, published=True)
    big = _big(quick)
    # A first start-up outside the measurement, so SMALL does not pay a cold disk cache alone.
    subprocess.run([str(COMMAND), "--help"], env=base_env(), capture_output=True, check=True)
    with simulator_process("--latency-ms", "0", "--seed", str(SEED)) as url:
        started = time.perf_counter()
        s = _delta_runs(url, small.db, size)
        b = _delta_runs(url, big.db, size)
        _note(f"delta: the six runs took {time.perf_counter() - started:.1f} s")
    _DELTA_RUNS[quick] = b.run.outcome.run_id
    sc = "10 delta"
    small_label = f"SMALL ({small.rows:,} published rows)"
    big_label = f"BIG ({big.rows:,} published rows)"

    def pair(
        what: str, small_v: float, big_v: float, unit: str = "s", *, judged: bool = False
    ) -> list[Figure]:
        ratio = _ratio(big_v, small_v)
        return [
            Figure(sc, f"{small_label}: {what}", small_v, unit),
            Figure(
                sc,
                f"{big_label}: {what}",
                big_v,
                unit,
                "SMALL",
                small_v,
                ratio,
                "<= 1.5x" if judged else "report",
                (ratio is not None and ratio <= 1.5) if judged else None,
            ),
        ]

    figures = [
        *pair(
            f"`mobile-status enrich` of {size:,} new numbers, start-up included",
            s.cli_s,
            b.cli_s,
            judged=True,
        ),
        *pair(
            f"in-process Dagster run (`materialize_sets`) of {size:,} other new numbers",
            s.run.seconds,
            b.run.seconds,
            judged=True,
        ),
        *pair("`enrich` of the first set again, every answer fresh", s.rerun_s, b.rerun_s),
    ]
    for label, r in (("SMALL", s), ("BIG", b)):
        figures += [
            Figure(
                sc,
                f"{label}: numbers billed by the `enrich` run ({r.cli_calls:,} calls)",
                r.cli_billed,
                "numbers",
                target=f"{size:,}",
                met=r.cli_billed == size and r.cli_calls == size,
            ),
            Figure(
                sc,
                f"{label}: numbers billed by the Dagster run ({r.run_calls:,} calls)",
                r.run_billed,
                "numbers",
                target=f"{size:,}",
                met=r.run_billed == size and r.run_calls == size,
            ),
            Figure(
                sc,
                f"{label}: provider calls of the fresh rerun",
                r.rerun_calls,
                "calls",
                target="0",
                met=r.rerun_calls == 0,
            ),
        ]
        figures.append(
            Figure(
                sc,
                f"{label}: asset checks passed in the Dagster run",
                r.run.checks_passed,
                "checks",
                target=str(r.run.checks),
                met=r.run.checks_passed == r.run.checks > 0,
            )
        )
    # Where the Dagster run's time goes, step by step and, inside the enrichment, by phase.
    for step, small_s in s.run.steps_s.items():
        figures += pair(f"Dagster run, step `{step}`", small_s, b.run.steps_s.get(step, 0.0))
    if s.run.phases_s is None or b.run.phases_s is None:
        _note(f"delta: no {PHASE_METADATA} in the run's metadata; phases not reported")
    else:
        for phase, small_s in s.run.phases_s.items():
            figures += pair(
                f"Dagster run, enrichment phase `{phase}`", small_s, b.run.phases_s.get(phase, 0.0)
            )
    return figures


# -- 11: publishing 10,000,000 fresh numbers -------------------------------------------


@functools.cache
def _unpublished(quick: bool) -> SeededSets:
    return _seed_sets(SETS, 5_000 if quick else 500_000, published=False)


def publish_scale(quick: bool) -> list[Figure]:
    """Scenario 11: publish 20 sets of fresh numbers (0 calls) vs a bare DuckDB INSERT."""
    data = _unpublished(quick)
    t = DEFAULT_TABLES
    with duckdb.connect(str(data.db)) as conn:
        # The reference: the same rows joined and inserted, no normalization, no checks.
        conn.execute(f"CREATE OR REPLACE TABLE bench_bare_published AS FROM {t.published} LIMIT 0")
        started = time.perf_counter()
        conn.execute(
            f"""
            INSERT INTO bench_bare_published
            SELECT n.set_id, n.mobile, n.mobile, true, NULL, c.status_code, c.status, c.operator,
                   NULL, NULL, c.order_number, c.checked_at, 'cache', 'bench-bare'
            FROM number_sets n JOIN {t.cache} c USING (mobile)
            """
        )
        bare_s = time.perf_counter() - started
        conn.execute("DROP TABLE bench_bare_published")
        conn.execute("CHECKPOINT")
    # Side by side on copies of one file: the library's settings (DuckDB capped at
    # DEFAULT_MEMORY_LIMIT), then DuckDB's own default memory limit (80 % of RAM).
    uncapped_db = data.db.with_name("uncapped-" + data.db.name)
    shutil.copyfile(data.db, uncapped_db)
    publish_s = _publish_all(data.db, data)
    uncapped_s = _publish_all(uncapped_db, data, {"memory_limit": "80%"})
    uncapped_db.unlink()
    _note(
        f"publish-scale: bare insert {bare_s:.1f} s, publish_partitions {publish_s:.1f} s "
        f"({uncapped_s:.1f} s uncapped)"
    )
    # The whole Dagster materialization of the 20 sets: plan, publish, summary, charges, checks.
    with simulator_process("--latency-ms", "0", "--seed", str(SEED)) as url:
        run = _materialize(url, data.db, data.set_ids)
        calls = _stats(url)[0]
    _note(f"publish-scale: the Dagster run took {run.seconds:.1f} s ({calls} calls)")
    sc = "11 publish scale"
    full = not quick
    label = f"{data.rows:,} fresh numbers in {data.sets} sets"
    ratio = publish_s / bare_s
    return [
        Figure(sc, f"bare DuckDB INSERT … SELECT source JOIN cache, {label}", bare_s, "s"),
        Figure(
            sc,
            f"`publish_partitions` of {label} (normalize, check, replace, summary)",
            publish_s,
            "s",
            "bare INSERT",
            bare_s,
            ratio,
            "<= 20 s" if full else "report",
            publish_s <= 20 if full else None,
        ),
        Figure(
            sc,
            f"the same, DuckDB at its own memory limit (80 % of RAM), not {DEFAULT_MEMORY_LIMIT}",
            uncapped_s,
            "s",
            "library default",
            publish_s,
            uncapped_s / publish_s,
            "report",
        ),
        Figure(
            sc,
            f"whole Dagster materialization of the {data.sets} sets (one run)",
            run.seconds,
            "s",
            "publish_partitions",
            publish_s,
            run.seconds / publish_s,
        ),
        Figure(sc, "provider calls of that run", calls, "calls", target="0", met=calls == 0),
        Figure(
            sc,
            "asset checks passed in that run",
            run.checks_passed,
            "checks",
            target=str(run.checks),
            met=run.checks_passed == run.checks > 0,
        ),
        *_breakdown(sc, "that run", run),
    ]


def _publish_all(db: Path, data: SeededSets, config: dict[str, Any] | None = None) -> float:
    """Seconds to publish every set of ``data`` in ``db`` (0 calls), on the library's
    connection settings and ``config``."""
    with connect_with_retry(str(db), config=config) as conn:
        started = time.perf_counter()
        outcomes = publish_partitions(
            conn,
            SourceTable(),
            [Partition(key) for key in data.set_ids],
            tables=DEFAULT_TABLES,
            run_id="bench-publish",
            freshness=Freshness(),
            now=datetime.now(UTC),
        )
        seconds = time.perf_counter() - started
    assert all(o.published for o in outcomes), [o for o in outcomes if not o.published]
    assert sum(o.rows for o in outcomes) == data.rows
    return seconds


# -- 12: where one DuckDB file ends ----------------------------------------------------


@dataclass(frozen=True)
class _Warehouse:
    db: Path
    set_size: int
    cache_size: int


@functools.cache
def _warehouse(quick: bool) -> _Warehouse:
    """A messy set ``big`` of 10,000,000 rows (quick: 100,000) against a cache five times
    that size holding every one of its numbers fresh, each with its billed audit row (so
    the checks pass; ``pad_cache`` writes no audit)."""
    set_size = 100_000 if quick else 10_000_000
    cache_size = 5 * set_size
    db = _workdir() / "warehouse.duckdb"
    started = time.perf_counter()
    with duckdb.connect(str(db)) as conn:
        ensure_schema(conn, DEFAULT_TABLES)
        seed_messy_set(conn, "big", set_size)
        _seed_answers(
            conn,
            0,
            cache_size,
            f"CASE WHEN i < {set_size} THEN 'big' END",
            f"CASE WHEN i < {set_size} THEN '{SEED_RUN}0' ELSE '{SEED_RUN}padding' END",
            published=False,
        )
        rebuild_charges(conn, tables=DEFAULT_TABLES)
        conn.execute("CHECKPOINT")
    _note(f"warehouse: seeded in {time.perf_counter() - started:.1f} s")
    return _Warehouse(db, set_size, cache_size)


def warehouse(quick: bool) -> list[Figure]:
    """Scenario 12: planning and a whole zero-call run of a 10M-row set, 50M-row cache."""
    data = _warehouse(quick)
    planned = plan_in_own_process(data.db, "big")
    assert planned["to_send"] == 0, planned
    with simulator_process("--latency-ms", "0", "--seed", str(SEED)) as url:
        run_s, run_mb = _cli_enrich_peak(url, data.db, "big")
        calls = _stats(url)[0]
    _note(f"warehouse: plan {planned['seconds']:.1f} s, enrich {run_s:.1f} s ({calls} calls)")
    sc = "12 warehouse"
    label = f"{data.set_size:,} messy rows vs a {data.cache_size:,}-row cache"
    return [
        Figure(sc, f"plan, {label}", planned["seconds"], "s", target="report"),
        Figure(
            sc, "peak RSS of the planning process", planned["peak_rss_mb"], "MB", target="report"
        ),
        Figure(
            sc,
            "`mobile-status enrich` of that set (0 calls), start-up included",
            run_s,
            "s",
            target="report",
        ),
        Figure(sc, "peak RSS of that `enrich` process", run_mb, "MB", target="report"),
        Figure(sc, "provider calls of that run", calls, "calls", target="0", met=calls == 0),
    ]


# -- 13: the asset checks at 10,000,000 published rows ---------------------------------


def _partitions(keys: Sequence[str]) -> Sequence[Partition]:
    return [Partition(key) for key in keys]


_CHECKS: dict[str, Callable[..., CheckOutcome]] = {
    "coverage": lambda conn, **kw: audit_checks.coverage(
        conn, SourceTable(), _partitions, tables=DEFAULT_TABLES, **kw
    ),
    "audit_reconciliation": lambda conn, **kw: audit_checks.audit_reconciliation(
        conn, tables=DEFAULT_TABLES, **kw
    ),
    "no_double_billing": lambda conn, **kw: audit_checks.no_double_billing(
        conn, Freshness(), tables=DEFAULT_TABLES, **kw
    ),
}
_CHECK_FUNCTIONS = (
    audit_checks.coverage,
    audit_checks.audit_reconciliation,
    audit_checks.no_double_billing,
)


def _checks_take_run_id() -> bool:
    """Whether the check functions accept ``run_id=`` (examine only what one run did)."""
    return all("run_id" in inspect.signature(f).parameters for f in _CHECK_FUNCTIONS)


def _a_delta_run(quick: bool, data: SeededSets) -> str:
    """The run id of a 1,000-number Dagster run on BIG: the delta scenario's, or a new one."""
    if quick in _DELTA_RUNS:
        return _DELTA_RUNS[quick]
    size = 100 if quick else 1_000
    _load_set(data.db, "c1", _new_numbers(NEW_START + 2_000_000, size))
    with simulator_process("--latency-ms", "0", "--seed", str(SEED)) as url:
        run = _materialize(url, data.db, ["c1"])
    _DELTA_RUNS[quick] = run.outcome.run_id
    return run.outcome.run_id


def checks(quick: bool) -> list[Figure]:
    """Scenario 13: each asset check on the whole 10M-row warehouse, and on one run's delta."""
    data = _big(quick)
    size = 100 if quick else 1_000
    run_id = _a_delta_run(quick, data)
    modes: list[tuple[str, dict[str, Any]]] = [("whole warehouse", {})]
    if _checks_take_run_id():
        modes.append(("one run's delta", {"run_id": run_id}))
    else:
        _note("checks: the check functions take no run_id yet; only the full checks measured")
    sc = "13 checks"
    figures: list[Figure] = []
    full_s: dict[str, float] = {}
    for mode, options in modes:
        problems = 0
        for name, check in _CHECKS.items():
            # A connection per check, as each Dagster check step opens its own.
            with duckdb.connect(str(data.db)) as conn:
                started = time.perf_counter()
                outcome = check(conn, **options)
                seconds = time.perf_counter() - started
            problems += outcome.problems
            if not options:
                full_s[name] = seconds
                figures.append(
                    Figure(
                        sc,
                        f"`{name}`, {mode} ({data.rows:,}+ published rows)",
                        seconds,
                        "s",
                        target="report",
                    )
                )
            else:
                figures.append(
                    Figure(
                        sc,
                        f"`{name}`, {mode} (a run of {size:,} new numbers)",
                        seconds,
                        "s",
                        "whole warehouse",
                        full_s[name],
                        _ratio(seconds, full_s[name]),
                        target="report",
                    )
                )
        figures.append(
            Figure(
                sc,
                f"problems found by the three checks, {mode}",
                problems,
                "problems",
                target="0",
                met=problems == 0,
            )
        )
    return figures
