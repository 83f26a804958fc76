"""Scenario 14: the PostgreSQL store beside the DuckDB store, at the engine level.

Every figure is measured twice in one run, on the same machine and the same data: once
with :class:`~mobile_status_dagster.core.store.postgres.store.PostgresStore` and once with
:class:`~mobile_status_dagster.core.store.duckdb_store.DuckDBStore`, both through the
engine's ``enrich`` or the store functions it calls (``plan_run``, ``fold_segment``), **not
through Dagster**. The PostgreSQL server is the tests' throwaway server
(:class:`tests.postgres_server.PostgresServer`, started here and stopped at the end), made
durable as a production server is (``fsync``, ``synchronous_commit`` and
``full_page_writes`` on: the tests turn them off) and logging each statement's duration,
from which the PostgreSQL phase figures are read. Its memory settings are PostgreSQL's
defaults (``shared_buffers`` 128 MB, ``work_mem`` 4 MB).

The PostgreSQL data is made by the server from ``generate_series``, in SQL that is the twin
of ``bench/data.py``'s and ``bench/scale.py``'s DuckDB SQL: the same numbers, spellings,
statuses and times (the numbers and spellings are compared at start, see
:func:`_check_twins`). Set-up times are reported as notes, not judged; after each set-up the
server checkpoints and the OS writes its dirty pages, so that write-back does not land in
a measurement.

- 14a end to end: 20,000 numbers at 50 ms, concurrency 64: the raw client, then ``enrich``
  with each store; overhead share of the engine's wall time, target <= 10 %.
- 14b planning 1,000,000 messy numbers against a 10,000,000-row cache: ``plan_run`` in a
  process of its own, spool included; PostgreSQL target <= 6 s.
- 14c persisting 1,000,000 answers: one journal segment folded (``fold_segment``) into empty
  tables.
- 14d crash cost: numbers billed twice after a SIGKILL at a third of 10,000 numbers and a
  rerun (on the same machine, and for PostgreSQL on another machine, the killed run's local
  journal lost: bound in flight + the answers of the last 100 ms, ``DURABLE_WITHIN_S``).
- 14e delta: a 1,000-number run beside 1,000 vs 10,000,000 published rows, target <= 1.5x.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psutil

from bench import pipeline, scale
from bench.data import _PREFIXES, numbers_sql, pad_cache, seed_messy_set, write_journal
from bench.report import Figure, print_table
from bench.simulator_process import SimulatorURL, simulator_process
from bench.store_worker import make_store, run_engine
from bench.worker import plan_in_own_process
from mobile_status_dagster.core.engine import EnrichmentReport, journal_dir_for
from mobile_status_dagster.core.engine.journal import SUFFIX as JOURNAL_SUFFIX
from mobile_status_dagster.core.numbers import PREFIX_LENGTH, prefix_rows
from mobile_status_dagster.core.store.backend import StateStore
from mobile_status_dagster.core.store.connection import connect_with_retry
from mobile_status_dagster.core.store.number_sql import quote_identifier
from mobile_status_dagster.core.store.postgres import PostgresTarget
from mobile_status_dagster.core.store.postgres import record as pg_record
from mobile_status_dagster.core.store.postgres import schema as pg_schema
from mobile_status_dagster.core.store.postgres import summaries as pg_summaries
from mobile_status_dagster.core.store.postgres.store import DURABLE_WITHIN_S, PostgresStore
from mobile_status_dagster.core.store.record import fold_segment
from mobile_status_dagster.core.store.schema import (
    AUDIT,
    CACHE,
    DEFAULT_TABLES,
    PUBLISHED,
    ensure_schema,
    status_label_sql,
)
from tests import postgres_server
from tests.postgres_server import PostgresServer, PostgresServerInfo
from tests.support import PRICE, base_env

ROOT = Path(__file__).resolve().parent.parent
SERVER_LOG = Path(tempfile.gettempdir()) / "mobile-status-bench-postgres.log"
LATENCY_MS = pipeline.LATENCY_MS
CONCURRENCY = pipeline.CONCURRENCY
E2E = "14a pg end to end"
PLANNING = "14b pg planning"
WRITE = "14c pg write path"
CRASH = "14d pg crash cost"
DELTA = "14e pg delta"
STORES = ("PostgreSQL", "DuckDB")
TOP_STATEMENTS = 6
"""How many of the PostgreSQL statement kinds, longest first, a phase breakdown shows."""
REPEATS = 3
"""Runs per store and warehouse in the delta scenario; the median is reported."""
_DELTA_START = scale.NEW_START + 4_000_000
"""The first new number of 14e: past those scenarios 10 and 13 enrich in the same DuckDB
BIG warehouse (``scale._big``) earlier in a full run, which 14e would find fresh."""

PgConn = Any
"""A psycopg session (``PostgresTarget.open()``); ``Any`` as the SQL here is built text."""


def _note(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# -- the server ------------------------------------------------------------------------

_MEASURED_SETTINGS = {
    # Durable, as a production server is (the tests' server turns these off).
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    # Every statement's duration in the server log: the PostgreSQL phase figures.
    "log_min_duration_statement": "0",
    # The plan of every statement over a second, in the same log (no ANALYZE: no cost).
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "1s",
}


class _BenchServer(PostgresServer):
    """:class:`PostgresServer` started with :data:`_MEASURED_SETTINGS` over the tests'."""

    def _pg_ctl_start(self, port: int) -> None:
        settings = postgres_server.SERVER_SETTINGS
        saved = dict(settings)
        settings.update(_MEASURED_SETTINGS)
        try:
            super()._pg_ctl_start(port)
        finally:
            settings.clear()
            settings.update(saved)


_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[\d+\] ", re.MULTILINE)
_DURATION = re.compile(
    r"LOG:  duration: ([0-9.]+) ms  (?:statement|execute [^:]*): (.*)", re.DOTALL
)
_WORDS = 5


def _kind(statement: str) -> str:
    """A statement's first words, e.g. ``INSERT INTO "provider_calls" SELECT *``."""
    words = statement.split()
    text = " ".join(words[:_WORDS]) + (" …" if len(words) > _WORDS else "")
    return text.replace("`", "'")


Statements = dict[str, tuple[float, int]]
"""Server seconds and executions by statement kind, longest first."""


@dataclass
class _ServerLog:
    """The server's log: seconds per statement kind between :meth:`mark` and
    :meth:`statements` (``log_min_duration_statement = 0``)."""

    path: Path
    offset: int = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def statements(self) -> Statements:
        """Seconds and executions by statement kind since :meth:`mark`, longest first."""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode("utf-8", errors="replace")
        seconds: dict[str, float] = collections.defaultdict(float)
        counts: collections.Counter[str] = collections.Counter()
        for record in _LOG_RECORD.split(text):
            match = _DURATION.match(record)
            if match is not None:
                kind = _kind(match.group(2))
                seconds[kind] += float(match.group(1)) / 1000
                counts[kind] += 1
        ranked = sorted(seconds.items(), key=lambda item: -item[1])
        return {kind: (value, counts[kind]) for kind, value in ranked}


@dataclass
class _Postgres:
    """The running server of this scenario and its log."""

    info: PostgresServerInfo
    log: _ServerLog
    postmaster: psutil.Process

    def cpu_s(self) -> float:
        """CPU seconds of the server so far: the postmaster, the sessions it reaped, the
        processes alive now."""
        times = self.postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.postmaster.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        return float(total)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database (dropped at the end): its URL."""
        with self.info.fresh_database() as fresh:
            yield fresh.url


@contextlib.contextmanager
def _session(url: str) -> Iterator[PgConn]:
    """An autocommit session, as the store opens them."""
    with PostgresTarget(url).connect()() as conn:
        yield conn


# -- data: the twins of bench/data.py and bench/scale.py in PostgreSQL -------------------

_MESSY = """CASE
    WHEN i % 50 = 49 THEN 'not a number ' || i
    WHEN i % 6 = 0 THEN m
    WHEN i % 6 = 1
        THEN '+86 ' || substr(m, 1, 3) || '-' || substr(m, 4, 4) || '-' || substr(m, 8)
    WHEN i % 6 = 2 THEN '0086' || m
    WHEN i % 6 = 3 THEN m || '.0'
    WHEN i % 6 = 4 THEN '(' || substr(m, 1, 3) || ') ' || substr(m, 4)
    ELSE ' ' || m || ' ' END"""
"""The spellings of ``bench.data.seed_messy_set`` (the same SQL in both databases)."""


def pg_numbers_sql(start: int, stop: int) -> str:
    """``SELECT i, m`` of ``bench.data.numbers_sql(start, stop)``, in PostgreSQL."""
    return (
        f"SELECT i, (ARRAY{_PREFIXES})[1 + i % 8] || "
        "lpad(CAST((i * 7919) % 100000000 AS TEXT), 8, '0') AS m "
        f"FROM generate_series(CAST({start} AS BIGINT), CAST({stop - 1} AS BIGINT)) AS t(i)"
    )


def _literal(text: str) -> str:
    assert re.fullmatch(r"[A-Za-z0-9_-]+", text), text
    return f"'{text}'"


def _pg_messy_set(conn: PgConn, set_id: str, count: int) -> None:
    """``bench.data.seed_messy_set`` in PostgreSQL."""
    pg_schema.create_default_source(conn)
    conn.execute(
        f"INSERT INTO number_sets (set_id, mobile) SELECT {_literal(set_id)}, {_MESSY} "
        f"FROM ({pg_numbers_sql(0, count)}) AS g"
    )


def _pg_load_set(url: str, set_id: str, numbers: Sequence[str]) -> None:
    """A new set in PostgreSQL's source table (the user's load; COPY)."""
    with _session(url) as conn:
        pg_schema.create_default_source(conn)
        with (
            conn.cursor() as cursor,
            cursor.copy("COPY number_sets (set_id, mobile) FROM STDIN") as copy,
        ):
            for number in numbers:
                copy.write_row((set_id, number))


def _check_twins(pg: _Postgres) -> None:
    """The PostgreSQL SQL makes the numbers and spellings the DuckDB SQL makes."""
    count = 10_000
    with pg.database() as url, _session(url) as conn, duckdb.connect() as duck:
        for start in (0, scale.NEW_START):
            agg = "SELECT md5(string_agg(m, ',' ORDER BY i)) FROM"
            duck_digest = duck.execute(f"{agg} ({numbers_sql(start, start + count)})").fetchone()
            pg_digest = conn.execute(f"{agg} ({pg_numbers_sql(start, start + count)}) g").fetchone()
            assert duck_digest == pg_digest, (start, duck_digest, pg_digest)
        seed_messy_set(duck, "x", count)
        _pg_messy_set(conn, "x", count)
        agg = "SELECT md5(string_agg(mobile, ',' ORDER BY mobile)) FROM number_sets"
        assert duck.execute(agg).fetchone() == conn.execute(agg).fetchone()


@contextlib.contextmanager
def _without_indexes(conn: PgConn, tables: Sequence[str]) -> Iterator[None]:
    """Drop the indexes of ``tables`` while seeding, and recreate them from their definitions
    (``CREATE INDEX`` sorts once: much faster than keeping them up row by row)."""
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = current_schema() AND tablename = ANY(%s)",
        [list(tables)],
    ).fetchall()
    for name, _ in rows:
        conn.execute(f"DROP INDEX {quote_identifier(name)}")
    yield
    for _, definition in rows:
        conn.execute(definition)


@contextlib.contextmanager
def _prefix_table(conn: PgConn) -> Iterator[str]:
    """The library's prefix rows in a table (``register_number_rules`` for DuckDB)."""
    conn.execute(
        "CREATE TABLE bench_prefixes (prefix TEXT PRIMARY KEY, prefix_operator TEXT, "
        "network_operator TEXT)"
    )
    with conn.cursor() as cursor, cursor.copy("COPY bench_prefixes FROM STDIN") as copy:
        for row in prefix_rows():
            copy.write_row(row)
    try:
        yield "bench_prefixes"
    finally:
        conn.execute("DROP TABLE bench_prefixes")


def _settle(conn: PgConn) -> None:
    """Write the set-up's dirty pages out now (a checkpoint, then the OS's), so that
    their write-back does not land in the measurements that follow."""
    conn.execute("CHECKPOINT")
    os.sync()


def _timestamp(moment: datetime) -> str:
    return f"CAST('{moment.isoformat()}' AS TIMESTAMPTZ)"


def _pg_seed_answers(
    conn: PgConn, prefixes: str, start: int, stop: int, set_sql: str, run_sql: str
) -> None:
    """``bench.scale._seed_answers(..., published=True)`` in PostgreSQL: fresh cache rows,
    their billed audit rows and their published rows."""
    base = _timestamp(datetime.now(UTC) - timedelta(days=1))
    status = scale._STATUS
    answers = f"""
        SELECT g.m, {set_sql} AS set_id, {run_sql} AS run_id,
               {status} AS st, {status_label_sql(status)} AS label,
               CASE WHEN p.network_operator IN ({scale._SERVING}) THEN p.network_operator
                    ELSE 'CM' END AS op,
               p.prefix_operator AS po, p.network_operator AS no,
               md5(g.m) AS order_number,
               {base} + (g.i - {start}) * INTERVAL '1 microsecond' AS checked_at
        FROM ({pg_numbers_sql(start, stop)}) AS g
        LEFT JOIN {prefixes} p ON p.prefix = substr(g.m, 1, {PREFIX_LENGTH})
    """
    t = DEFAULT_TABLES
    conn.execute(
        f"INSERT INTO {t.cache} SELECT m, st, label, op, order_number, 2000, checked_at, run_id "
        f"FROM ({answers}) AS a"
    )
    conn.execute(
        f"""
        INSERT INTO {t.audit}
        SELECT order_number, m, 2000, '查询成功', st, op, true, false,
               CAST('{PRICE}' AS NUMERIC(18, 6)), '{scale.CURRENCY}', set_id, run_id,
               checked_at - INTERVAL '40 milliseconds', 40.0, 1, 200, NULL, 'new'
        FROM ({answers}) AS a
        """
    )
    conn.execute(
        f"""
        INSERT INTO {t.published}
        SELECT set_id, m, m, true, NULL, st, label, op, po,
               CASE WHEN no IN ({scale._SERVING}) THEN op <> no END,
               order_number, checked_at, 'cache', run_id
        FROM ({answers}) AS a WHERE set_id IS NOT NULL
        """
    )


def _pg_seed_sets(url: str, sets: int, set_size: int) -> float:
    """``bench.scale._seed_sets(sets, set_size, published=True)`` in PostgreSQL; seconds."""
    started = time.perf_counter()
    count = sets * set_size
    set_sql = f"'s' || lpad(CAST(g.i / {set_size} AS TEXT), 2, '0')"
    run_sql = f"'{scale.SEED_RUN}' || CAST(g.i / {set_size} AS TEXT)"
    with _session(url) as conn:
        pg_schema.ensure_schema(conn, DEFAULT_TABLES)
        pg_schema.create_default_source(conn)
        with (
            _prefix_table(conn) as prefixes,
            _without_indexes(conn, (CACHE, AUDIT, PUBLISHED, "number_sets")),
        ):
            conn.execute(
                f"INSERT INTO number_sets (set_id, mobile, loaded_at) "
                f"SELECT {set_sql}, m, now() - INTERVAL '2 days' "
                f"FROM ({pg_numbers_sql(0, count)}) g"
            )
            _pg_seed_answers(conn, prefixes, 0, count, set_sql, run_sql)
        pg_summaries.rebuild_summary(conn, tables=DEFAULT_TABLES)
        pg_summaries.rebuild_charges(conn, tables=DEFAULT_TABLES)
        conn.execute("VACUUM ANALYZE")  # what autovacuum does soon after a load
        _settle(conn)
    seconds = time.perf_counter() - started
    _note(f"postgres: seeded {sets} x {set_size:,} published numbers in {seconds:.1f} s")
    return seconds


# -- measuring -------------------------------------------------------------------------


def _pg_store(url: str) -> PostgresStore:
    return PostgresStore(PostgresTarget(url), pipeline._workdir() / "journal")


def _engine(
    store: StateStore, url: str, run_id: str, *set_ids: str
) -> tuple[float, EnrichmentReport]:
    seconds, report = asyncio.run(run_engine(store, url, run_id, CONCURRENCY, *set_ids))
    if not report.ok:
        raise RuntimeError(f"{store.name} run {run_id} failed: {report.stop_message()}")
    return seconds, report


def _phases(scenario: str, label: str, report: EnrichmentReport) -> list[Figure]:
    return [
        Figure(scenario, f"{label}, phase `{phase}`", seconds, "s", target="report")
        for phase, seconds in report.phase_s.items()
    ]


def _statements(
    scenario: str, label: str, statements: Statements, total: float | None
) -> list[Figure]:
    """The longest PostgreSQL statement kinds of a measurement and, given its ``total``
    seconds (one session, one statement at a time), the time outside them."""
    figures = [
        Figure(
            scenario,
            f"{label}, server time of `{kind}` (x{count:,})",
            seconds,
            "s",
            target="report",
        )
        for kind, (seconds, count) in list(statements.items())[:TOP_STATEMENTS]
    ]
    if total is not None:
        outside = total - sum(seconds for seconds, _ in statements.values())
        figures.append(
            Figure(
                scenario,
                f"{label}, outside PostgreSQL's statements (client: DuckDB, CSV, Python)",
                outside,
                "s",
                target="report",
            )
        )
    return figures


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference > 0 else None


# -- 14a: end to end -------------------------------------------------------------------


def end_to_end(pg: _Postgres, quick: bool) -> list[Figure]:
    """Raw client vs ``enrich`` with each store, on the same numbers and simulator."""
    count = 1500 if quick else 20_000
    db = pipeline._seeded_db("e2e", count)
    numbers = pipeline._normalized(count)
    with pg.database() as url:
        with _session(url) as conn:
            _pg_messy_set(conn, "e2e", count)
            conn.execute("VACUUM ANALYZE number_sets")
            _settle(conn)
        with simulator_process("--latency-ms", str(LATENCY_MS), "--seed", "4") as sim:
            cpu = time.process_time()
            raw_s = asyncio.run(pipeline._raw_client(sim, numbers))
            cpu_s = {"raw client": time.process_time() - cpu}
            cpu, server_cpu = time.process_time(), pg.cpu_s()
            pg.log.mark()
            runs = {"PostgreSQL": _engine(_pg_store(url), sim, "e2e-pg", "e2e")}
            statements = pg.log.statements()
            cpu_s["PostgreSQL"] = time.process_time() - cpu
            server_cpu = pg.cpu_s() - server_cpu
            cpu = time.process_time()
            runs["DuckDB"] = _engine(make_store("duckdb", str(db), Path()), sim, "e2e-duck", "e2e")
            cpu_s["DuckDB"] = time.process_time() - cpu
    label = f"{len(numbers):,} numbers, latency {LATENCY_MS} ms, concurrency {CONCURRENCY}"
    figures = [Figure(E2E, f"raw client, {label}", raw_s, "s")]
    overhead = {name: (s - raw_s) / s * 100 for name, (s, _) in runs.items()}
    for name, (seconds, report) in runs.items():
        assert report.sent == len(numbers), (name, report.sent)
        figures.append(
            Figure(
                E2E,
                f"{name}: engine `enrich` (plan, check, journal, fold, publish; no Dagster)",
                seconds,
                "s",
                "raw client",
                raw_s,
                seconds / raw_s,
            )
        )
    for name in STORES:
        other = "DuckDB" if name == "PostgreSQL" else ""
        figures.append(
            Figure(
                E2E,
                f"{name}: overhead share of the engine run's wall time",
                overhead[name],
                "%",
                other,
                overhead[other] if other else None,
                target="report" if quick else "<= 10 %",
                met=None if quick else overhead[name] <= 10,
            )
        )
    for name, (_, report) in runs.items():
        figures += _phases(E2E, f"{name} run", report)
    # On two cores the client, the simulator and PostgreSQL share the CPU.
    for name, seconds in cpu_s.items():
        figures.append(
            Figure(E2E, f"CPU of the measuring process, {name} run", seconds, "s", target="report")
        )
    figures.append(
        Figure(
            E2E, "CPU of the PostgreSQL server, PostgreSQL run", server_cpu, "s", target="report"
        )
    )
    figures += _statements(E2E, "PostgreSQL run", statements, None)
    return figures


# -- 14b, 14c: the write path and planning ---------------------------------------------


def write_path_and_planning(pg: _Postgres, quick: bool) -> list[Figure]:
    """Fold one segment of answers into each store, pad both caches, seed the same messy
    set in both, then plan it in a process of its own against each."""
    set_size = 50_000 if quick else 1_000_000
    cache_size = 10 * set_size
    work = pipeline._workdir()
    journal = work / "seed.jsonl"
    write_journal(journal, set_size)
    db = work / "scale.duckdb"
    with connect_with_retry(str(db)) as conn:  # the library's connection settings
        ensure_schema(conn, DEFAULT_TABLES)
        started = time.perf_counter()
        fold_segment(conn, journal, tables=DEFAULT_TABLES)
        duck_fold_s = time.perf_counter() - started
        started = time.perf_counter()
        pad_cache(conn, set_size, cache_size)
        seed_messy_set(conn, "big", set_size)
        conn.execute("CHECKPOINT")
        duck_seed_s = time.perf_counter() - started
    figures: list[Figure] = []
    with pg.database() as url:
        with _session(url) as conn:
            pg_schema.ensure_schema(conn, DEFAULT_TABLES)
            pg.log.mark()
            started = time.perf_counter()
            pg_record.fold_segment(conn, journal, tables=DEFAULT_TABLES)
            pg_fold_s = time.perf_counter() - started
            fold_statements = pg.log.statements()
            journal.unlink()
            started = time.perf_counter()
            with _without_indexes(conn, (CACHE,)):
                conn.execute(
                    f"INSERT INTO {DEFAULT_TABLES.cache} "
                    "SELECT m, 1, 'online', 'CM', md5(m), 2000, now(), 'bench-padding' "
                    f"FROM ({pg_numbers_sql(set_size, cache_size)}) g"
                )
                _pg_messy_set(conn, "big", set_size)
            conn.execute("VACUUM ANALYZE")
            _settle(conn)
            pg_seed_s = time.perf_counter() - started
        _note(f"planning: seeded DuckDB in {duck_seed_s:.1f} s, PostgreSQL in {pg_seed_s:.1f} s")
        duck_plan = plan_in_own_process(db, "big")
        pg.log.mark()
        pg_plan = _pg_plan_in_own_process(url, "big")
        plan_statements = pg.log.statements()
    assert duck_plan["to_send"] == 0 == pg_plan["to_send"], (duck_plan, pg_plan)
    full = not quick
    answers = f"{set_size:,} answers (audit + cache, one segment, empty tables)"
    figures += [
        Figure(
            WRITE,
            f"PostgreSQL `fold_segment`, {answers}",
            pg_fold_s,
            "s",
            "DuckDB",
            duck_fold_s,
            pg_fold_s / duck_fold_s,
            "report",
        ),
        Figure(
            WRITE,
            "DuckDB `fold_segment`, the same segment",
            duck_fold_s,
            "s",
            target="< 2 s" if full else "report",
            met=duck_fold_s < 2 if full else None,
        ),
        Figure(WRITE, "PostgreSQL answers persisted per second", set_size / pg_fold_s, "answers/s"),
        *_statements(WRITE, "PostgreSQL fold", fold_statements, pg_fold_s),
    ]
    label = f"{set_size:,} messy inputs vs a {cache_size:,}-row cache, spool included"
    figures += [
        Figure(
            PLANNING,
            f"PostgreSQL `plan_run`, {label} (own process)",
            pg_plan["seconds"],
            "s",
            "DuckDB",
            duck_plan["seconds"],
            _ratio(pg_plan["seconds"], duck_plan["seconds"]),
            "<= 6 s" if full else "report",
            pg_plan["seconds"] <= 6 if full else None,
        ),
        Figure(
            PLANNING,
            "DuckDB `plan_run`, the same data (own process)",
            duck_plan["seconds"],
            "s",
            target="< 5 s" if full else "report",
            met=duck_plan["seconds"] < 5 if full else None,
        ),
        Figure(
            PLANNING,
            "PostgreSQL: peak RSS of the planning process (the server's not included)",
            pg_plan["peak_rss_mb"],
            "MB",
            "DuckDB",
            duck_plan["peak_rss_mb"],
            _ratio(pg_plan["peak_rss_mb"], duck_plan["peak_rss_mb"]),
            "report",
        ),
        *_statements(PLANNING, "PostgreSQL plan", plan_statements, pg_plan["seconds"]),
        Figure(
            PLANNING,
            "set-up (not judged): seeding PostgreSQL (cache padding, messy set, indexes, "
            "VACUUM ANALYZE)",
            pg_seed_s,
            "s",
        ),
        Figure(
            PLANNING,
            "set-up (not judged): seeding DuckDB (cache padding, messy set)",
            duck_seed_s,
            "s",
        ),
    ]
    return figures


def _pg_plan_in_own_process(url: str, set_id: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.store_worker", "plan", url, set_id],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


# -- 14d: crash cost -------------------------------------------------------------------


def _billed_twice(sim: SimulatorURL) -> int:
    entries: list[dict[str, Any]] = httpx.get(
        sim + "/_sim/ledger", params={"billed": 1}, headers=sim.admin_headers
    ).json()
    counts = collections.Counter(e["mobile"] for e in entries)
    return sum(1 for n in counts.values() if n > 1)


def _journaled_billed(journal: Path) -> int:
    """Billed attempts in the journal segments left in ``journal`` (not yet folded)."""
    billed = 0
    for segment in journal.glob(f"*{JOURNAL_SUFFIX}") if journal.is_dir() else ():
        for line in segment.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                billed += isinstance(entry, dict) and entry.get("b") is True
    return billed


@dataclass(frozen=True)
class _Crash:
    twice: int
    """Numbers billed twice."""
    left_in_journal: int
    """Billed answers the killed run had journaled but not folded into the store."""


def _kill_at_a_third_and_rerun(
    kind: str, target: str, count: int, first_journal: Path, rerun_journal: Path
) -> _Crash:
    """A run (own process) killed once a third of ``count`` was asked, then a rerun."""
    with simulator_process("--latency-ms", str(LATENCY_MS)) as sim:
        command = [
            *(sys.executable, "-m", "bench.store_worker", "enrich", kind, target, sim),
            *("killed", str(first_journal), str(CONCURRENCY), "c"),
        ]
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=base_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while scale._stats(sim)[0] < count // 3:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} run ended before a third of its numbers")
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_s = time.perf_counter() - started
        left = _journaled_billed(first_journal)
        # The rerun in this process: on "another machine" it has a journal of its own.
        rerun_s, _ = _engine(make_store(kind, target, rerun_journal), sim, "rerun", "c")
        _note(f"crash, {kind}: killed after {killed_s:.1f} s, rerun {rerun_s:.1f} s")
        return _Crash(_billed_twice(sim), left)


def crash_cost(pg: _Postgres, quick: bool) -> list[Figure]:
    """Numbers billed twice after a SIGKILL of a run in its own process and a rerun."""
    count = 2000 if quick else 10_000
    per_interval = round(CONCURRENCY * DURABLE_WITHIN_S * 1000 / LATENCY_MS)
    pg_bound = CONCURRENCY + per_interval
    db = pipeline._seeded_db("c", count)
    duck = _kill_at_a_third_and_rerun("duckdb", str(db), count, journal_dir_for(str(db)), Path())
    pg_runs: dict[str, _Crash] = {}
    for machine in ("same", "other"):
        with pg.database() as url:
            with _session(url) as conn:
                _pg_messy_set(conn, "c", count)
            journal = pipeline._workdir() / "journal"
            rerun = journal if machine == "same" else pipeline._workdir() / "journal"
            pg_runs[machine] = _kill_at_a_third_and_rerun("postgres", url, count, journal, rerun)
    what = f"numbers billed twice after SIGKILL at 1/3 of {count:,} + rerun"
    in_flight = (
        f"in flight ({CONCURRENCY}) + last {DURABLE_WITHIN_S * 1000:.0f} ms ({per_interval})"
    )
    other, same = pg_runs["other"], pg_runs["same"]
    figures = [
        Figure(
            CRASH,
            f"PostgreSQL: {what} on another machine (the killed run's journal lost)",
            other.twice,
            "numbers",
            "in flight + last 100 ms",
            pg_bound,
            other.twice / pg_bound,
            f"<= {in_flight} = {pg_bound}",
            other.twice <= pg_bound,
        ),
        Figure(
            CRASH,
            f"PostgreSQL: {what} on the same machine (its journal folded first)",
            same.twice,
            "numbers",
            "max_concurrency",
            CONCURRENCY,
            same.twice / CONCURRENCY,
            "<= max_concurrency",
            same.twice <= CONCURRENCY,
        ),
        Figure(
            CRASH,
            f"DuckDB: {what} (its journal folded first)",
            duck.twice,
            "numbers",
            "max_concurrency",
            CONCURRENCY,
            duck.twice / CONCURRENCY,
            "<= max_concurrency",
            duck.twice <= CONCURRENCY,
        ),
    ]
    for label, crash in (
        ("PostgreSQL, another machine", other),
        ("PostgreSQL, same machine", same),
        ("DuckDB", duck),
    ):
        figures.append(
            Figure(
                CRASH,
                f"{label}: billed answers still in the killed run's journal",
                crash.left_in_journal,
                "answers",
                target="report",
            )
        )
    return figures


# -- 14e: delta ------------------------------------------------------------------------


@dataclass(frozen=True)
class _DeltaRun:
    seconds: float
    report: EnrichmentReport
    calls: int
    billed: int
    rerun_s: float
    rerun_calls: int
    statements: Statements


def _delta_run(
    pg: _Postgres, sim: SimulatorURL, store: StateStore, set_id: str, run_id: str
) -> _DeltaRun:
    """One run of a new set, then a rerun finding every answer fresh."""
    before = scale._stats(sim)
    pg.log.mark()
    seconds, report = _engine(store, sim, run_id, set_id)
    statements = pg.log.statements()
    after = scale._stats(sim)
    rerun_s, _ = _engine(store, sim, run_id + "-again", set_id)
    rerun_calls = scale._stats(sim)[0] - after[0]
    return _DeltaRun(
        seconds,
        report,
        after[0] - before[0],
        after[1] - before[1],
        rerun_s,
        rerun_calls,
        statements,
    )


def delta(pg: _Postgres, quick: bool) -> list[Figure]:
    """A run of ``size`` new numbers on a 1-set warehouse vs a 20-set, 10M-row one."""
    size = 100 if quick else 1_000
    big_size = 5_000 if quick else 500_000
    repeats = 1 if quick else REPEATS
    duck_small = scale._seed_sets(1, size, published=True)
    duck_big = scale._big(quick)
    assert duck_big.set_size == big_size
    # Each run is of new numbers of its own: repeats runs per store and warehouse,
    # interleaved, the median kept (a run takes about a second on a shared machine).
    sets = [scale._new_numbers(_DELTA_START + k * 1_000_000, size) for k in range(repeats)]
    warm = scale._new_numbers(_DELTA_START + repeats * 1_000_000, 50)
    samples: dict[tuple[str, str], list[_DeltaRun]] = collections.defaultdict(list)
    with (
        pg.database() as small_url,
        pg.database() as big_url,
        pg.database() as warm_url,
        simulator_process("--latency-ms", "0", "--seed", str(scale.SEED)) as sim,
    ):
        pg_small_s = _pg_seed_sets(small_url, 1, size)
        pg_big_s = _pg_seed_sets(big_url, scale.SETS, big_size)
        # A first run of each store outside the measurement (imports, first connections).
        warm_db = pipeline._workdir() / "warm.duckdb"
        scale._load_set(warm_db, "w", warm)
        _pg_load_set(warm_url, "w", warm)
        _engine(make_store("duckdb", str(warm_db), Path()), sim, "warm-duck", "w")
        _engine(_pg_store(warm_url), sim, "warm-pg", "w")
        targets = {
            ("PostgreSQL", "SMALL"): small_url,
            ("PostgreSQL", "BIG"): big_url,
            ("DuckDB", "SMALL"): str(duck_small.db),
            ("DuckDB", "BIG"): str(duck_big.db),
        }
        for k in range(repeats):
            set_id = f"n{k}"
            for (name, warehouse), target in targets.items():
                if name == "PostgreSQL":
                    _pg_load_set(target, set_id, sets[k])
                    store: StateStore = _pg_store(target)
                else:
                    scale._load_set(Path(target), set_id, sets[k])
                    store = make_store("duckdb", target, Path())
                run = _delta_run(pg, sim, store, set_id, f"delta-{warehouse}-{k}")
                samples[name, warehouse].append(run)
    for key, found in samples.items():
        _note(f"delta, {key[0]} {key[1]}: " + ", ".join(f"{r.seconds:.2f} s" for r in found))
    runs = {
        key: sorted(found, key=lambda r: r.seconds)[len(found) // 2]
        for key, found in samples.items()
    }
    small_label = f"SMALL ({size:,} published rows)"
    big_label = f"BIG ({duck_big.rows:,} published rows)"
    what = f"engine `enrich` of {size:,} new numbers (no Dagster; median of {repeats})"
    figures: list[Figure] = []
    full = not quick
    for name in STORES:
        s, b = runs[name, "SMALL"], runs[name, "BIG"]
        ratio = b.seconds / s.seconds
        figures += [
            Figure(DELTA, f"{name}: {small_label}: {what}", s.seconds, "s"),
            Figure(
                DELTA,
                f"{name}: {big_label}: {what}",
                b.seconds,
                "s",
                "SMALL",
                s.seconds,
                ratio,
                "<= 1.5x" if full else "report",
                ratio <= 1.5 if full else None,
            ),
        ]
    for (name, warehouse), run in runs.items():
        figures += [
            Figure(
                DELTA,
                f"{name}: {warehouse}: numbers billed ({run.calls:,} calls)",
                run.billed,
                "numbers",
                target=f"{size:,}",
                met=run.billed == size == run.calls,
            ),
            Figure(
                DELTA,
                f"{name}: {warehouse}: rerun, every answer fresh ({run.rerun_calls} calls)",
                run.rerun_s,
                "s",
                target="0 calls",
                met=run.rerun_calls == 0,
            ),
        ]
    # Where the time goes, SMALL -> BIG: the engine's phases, PostgreSQL's statements.
    for name, warehouse in ((n, "BIG") for n in STORES):
        before, after = runs[name, "SMALL"], runs[name, warehouse]
        for phase, big_s in after.report.phase_s.items():
            small_s = before.report.phase_s.get(phase, 0.0)
            figures.append(
                Figure(
                    DELTA,
                    f"{name} {warehouse}: phase `{phase}`",
                    big_s,
                    "s",
                    "SMALL",
                    small_s,
                    _ratio(big_s, small_s),
                    "report",
                )
            )
        for kind, (big_s, count) in list(after.statements.items())[:TOP_STATEMENTS]:
            small_s = before.statements.get(kind, (0.0, 0))[0]
            figures.append(
                Figure(
                    DELTA,
                    f"{name} {warehouse}: server time of `{kind}` (x{count:,})",
                    big_s,
                    "s",
                    "SMALL",
                    small_s,
                    _ratio(big_s, small_s),
                    "report",
                )
            )
    figures += [
        Figure(DELTA, "set-up (not judged): seeding PostgreSQL SMALL", pg_small_s, "s"),
        Figure(
            DELTA,
            f"set-up (not judged): seeding PostgreSQL BIG ({duck_big.rows:,} rows in source, "
            "cache, audit, published)",
            pg_big_s,
            "s",
        ),
        Figure(DELTA, "set-up (not judged): seeding DuckDB BIG", duck_big.setup_s, "s"),
    ]
    return figures


# -- the scenario ----------------------------------------------------------------------


def scenarios(quick: bool) -> list[Figure]:
    """Scenario 14: start a PostgreSQL server, measure 14a–14e beside DuckDB, stop it."""
    server = _BenchServer()
    try:
        info = server.start()
        pid = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
        pg = _Postgres(info, _ServerLog(server.log_file), psutil.Process(pid))
        with _session(info.url) as conn:
            durable = [
                conn.execute(f"SHOW {name}").fetchone()
                for name in ("fsync", "full_page_writes", "synchronous_commit")
            ]
        assert durable == [("on",)] * 3, durable
        _check_twins(pg)
        figures: list[Figure] = []
        for part in (end_to_end, write_path_and_planning, crash_cost, delta):
            started = time.perf_counter()
            measured = part(pg, quick)
            load = "/".join(f"{x:.1f}" for x in os.getloadavg())
            _note(
                f"postgres: {part.__name__} took {time.perf_counter() - started:.1f} s "
                f"(load average after it: {load})"
            )
            with contextlib.redirect_stdout(sys.stderr):  # kept in the log if a later part fails
                print_table(measured)
            figures += measured
        return figures
    finally:
        with contextlib.suppress(OSError):
            if server.root is not None:
                # Kept for reading the plans (auto_explain): SQL only, no phone number.
                SERVER_LOG.unlink(missing_ok=True)
                fd = os.open(SERVER_LOG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(server.log_file.read_bytes())
                _note(f"postgres: the server's log is in {SERVER_LOG}")
        server.stop()
