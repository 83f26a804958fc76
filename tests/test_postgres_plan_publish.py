"""The PostgreSQL store plans and publishes exactly as the DuckDB store does.

The DuckDB store is the oracle: both are seeded with the same source rows (messy
numbers, duplicates within and across sets, a set id that looks like SQL) and the same
cache (fresh, stale, unknown, a 4003 rejection, answers of the run), both plan and
publish, and the plans, spools, outcomes, published rows and summary rows must be equal.
"""

from __future__ import annotations

import functools
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from psycopg import sql

from mobile_status_dagster.core.errors import ConfigurationError, NumberRejectedError
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store import plan as duck_plan
from mobile_status_dagster.core.store import publish as duck_publish
from mobile_status_dagster.core.store import schema as duck_schema
from mobile_status_dagster.core.store.postgres import PostgresTarget, run_rows
from mobile_status_dagster.core.store.postgres import plan as pg_plan
from mobile_status_dagster.core.store.postgres import publish as pg_publish
from mobile_status_dagster.core.store.postgres import schema as pg_schema
from mobile_status_dagster.core.store.publish import PROVIDER_REJECTED, PartitionOutcome
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable
from tests.support import sample_numbers

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
RUN = "run-2"
TABLES = Tables()
#: A max age with microseconds: the SQL must keep them (10 days are not 10 days and 7 µs).
FRESHNESS = Freshness(
    max_age=timedelta(days=30),
    by_status={
        Status.VACANT: timedelta(days=7),
        Status.POWERED_OFF: timedelta(days=10, microseconds=7),
    },
)
SQLISH = "o'brien; drop table x"
ODD = 'no valid {1,"2"} \\ 集合'
"""A set id with what array literals, CSV and encodings must get right."""
NUMBERS = sample_numbers(40, seed=11)

#: Raw values our rules reject, or accept after cleaning; awkward for CSV on purpose.
MESSY: list[str | None] = [
    None,
    "",
    " ",
    "bad",
    "12345",
    "a,b",
    'q"uote',
    "line\nbreak",
    "cr\rreturn",
    "\\N",
    "\\.",
    "x\n\\.\ny",
    "\u200b",
    "+1 2025550123",
    "10000000000",
]


def variants(mobile: str) -> list[str]:
    """Spellings of ``mobile`` that our rules accept: one number, several raw rows."""
    fullwidth = mobile.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
    return [
        f"+86 {mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
        f"\t{mobile}\u00a0",
        fullwidth,
        f"0086{mobile}",
        f"{int(mobile):.10E}".replace("+", ""),
    ]


SETS: dict[str, list[str | None]] = {
    # "Beta" < "alpha" by code point (DuckDB), "alpha" < "Beta" in a linguistic collation.
    "alpha": [*NUMBERS[0:12], NUMBERS[0], *variants(NUMBERS[1]), *MESSY],
    "Beta": [*NUMBERS[8:20], NUMBERS[9], *MESSY[:4]],
    SQLISH: [*NUMBERS[18:24], *variants(NUMBERS[22])],
    "held": [*NUMBERS[24:30], "bad"],
    ODD: ["bad", None, ""],
}
PARTITIONS = [Partition(key) for key in (*SETS, "nothing")]


def cache_rows(numbers: Sequence[str] = NUMBERS[:30]) -> list[tuple[Any, ...]]:
    """Every kind of cache row, in turn over ``numbers`` (by default those of :data:`SETS`:
    30 of 40 cached)."""
    operators = ("CM", "CU", "CT")
    kinds: list[tuple[int | None, int, timedelta, str]] = [
        (Status.ONLINE, 2000, DAY, "run-0"),  # fresh
        (Status.ONLINE, 2000, 40 * DAY, "run-0"),  # stale
        (Status.UNKNOWN, 2000, DAY, "run-0"),  # never fresh: retry
        (None, NumberRejectedError.code, DAY, "run-0"),  # 4003, fresh
        (Status.VACANT, 2000, 10 * DAY, "run-0"),  # stale under its 7-day override
        (Status.POWERED_OFF, 2000, 10 * DAY, "run-0"),  # fresh
        (None, 5000, DAY, "run-0"),  # an error: retry
        (Status.ONLINE, 2000, timedelta(minutes=5), RUN),  # answered in this run
        (Status.CANCELLED, 2000, timedelta(minutes=5), RUN),
        (None, NumberRejectedError.code, 40 * DAY, "run-0"),  # 4003, stale
        (Status.ONLINE, 2000, 30 * DAY, "run-0"),  # exactly max_age: stale
        (Status.ONLINE, 2000, 30 * DAY - timedelta(microseconds=1), "run-0"),  # fresh
        (Status.VACANT, 2000, 7 * DAY - timedelta(microseconds=1), "run-0"),  # fresh
        (Status.POWERED_OFF, 2000, 10 * DAY + timedelta(microseconds=6), "run-0"),  # fresh
        (Status.POWERED_OFF, 2000, 10 * DAY + timedelta(microseconds=7), "run-0"),  # stale
    ]
    rows = []
    for i, mobile in enumerate(numbers):
        status, code, age, run = kinds[i % len(kinds)]
        answered = status is not None
        rows.append(
            (
                mobile,
                None if status is None else int(status),
                Status(status).label if status is not None else None,
                operators[i % 3] if answered and status != Status.UNKNOWN else None,
                f"order-{i}" if answered else None,
                code,
                NOW - age,
                run,
            )
        )
    return rows


def usable_cache_rows() -> list[tuple[Any, ...]]:
    """A cache where every number of :data:`SETS` has a usable answer (fresh or this run's)."""
    rows: list[tuple[Any, ...]] = []
    for i, mobile in enumerate(NUMBERS[:30]):
        run = RUN if i % 3 == 0 else "run-0"
        status = (Status.ONLINE, Status.VACANT, Status.POWERED_OFF, Status.CANCELLED)[i % 4]
        operator = ("CM", "CU", "CT")[i % 3]
        rows.append((mobile, int(status), status.label, operator, f"o{i}", 2000, NOW - DAY, run))
    rows[5] = (NUMBERS[5], None, None, None, None, NumberRejectedError.code, NOW - DAY, "run-0")
    return rows


def audit_rows() -> list[tuple[Any, ...]]:
    """This run's attempts: billed ones, a possibly billed one, and one of another run."""
    rows = []
    for i, (mobile, set_id) in enumerate(
        [(NUMBERS[0], "alpha"), (NUMBERS[3], "alpha"), (NUMBERS[12], "Beta"), (NUMBERS[18], SQLISH)]
    ):
        rows.append(_attempt(mobile, set_id, RUN, billed=True, possibly=False, order=f"a{i}"))
    rows.append(_attempt(NUMBERS[15], "Beta", RUN, billed=False, possibly=True, order=None))
    # A set whose only attempt was not billed: its cost is 0.000000 in both stores.
    rows.append(_attempt(NUMBERS[2], ODD, RUN, billed=False, possibly=True, order=None))
    rows.append(_attempt(NUMBERS[6], "alpha", "run-0", billed=True, possibly=False, order="z"))
    return rows


def _attempt(
    mobile: str, set_id: str, run: str, *, billed: bool, possibly: bool, order: str | None
) -> tuple[Any, ...]:
    return (
        order,
        mobile,
        2000 if billed else None,
        None,
        1 if billed else None,
        "CM" if billed else None,
        billed,
        possibly,
        Decimal("0.050000"),
        "CNY",
        set_id,
        run,
        NOW - timedelta(minutes=5),
        12.5,
        1,
        200 if billed else None,
        None if billed else "ReadTimeout",
        "new",
    )


@dataclass
class Stores:
    """The same database twice: DuckDB (the oracle) and PostgreSQL."""

    duck: duckdb.DuckDBPyConnection
    pg: psycopg.Connection[Any]

    def insert(self, table: str, rows: Sequence[tuple[Any, ...]], columns: str = "") -> None:
        """Append ``rows`` to ``table`` (a quoted name) in both."""
        if not rows:
            return
        marks = ", ".join("?" * len(rows[0]))
        self.duck.executemany(f"INSERT INTO {table} {columns} VALUES ({marks})", list(rows))
        with self.pg.cursor().copy(f"COPY {table} {columns} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        """Run ``statement`` (``?`` parameters in DuckDB, ``%s`` in PostgreSQL) in both."""
        self.duck.execute(statement, list(params))
        self.pg.execute(statement.replace("?", "%s"), list(params) or None)

    def seed_sets(self, sets: Mapping[str, Sequence[str | None]]) -> None:
        self.insert(
            "number_sets",
            [(key, mobile) for key, mobiles in sets.items() for mobile in mobiles],
            "(set_id, mobile)",
        )


@pytest.fixture
def stores(postgres_url: str) -> Iterator[Stores]:
    """Both stores, with the library's tables and the default source table."""
    duck = duckdb.connect()
    duck_schema.ensure_schema(duck, TABLES)
    duck.execute(duck_schema.SOURCE_DDL)
    with PostgresTarget(postgres_url).connect()() as pg:
        pg_schema.ensure_schema(pg, TABLES)
        pg_schema.create_default_source(pg)
        yield Stores(duck, pg)
    duck.close()


def normalized(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows with timestamps in UTC and types made comparable, sorted."""

    def value(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.astimezone(UTC)
        return v

    out = [tuple(value(v) for v in row) for row in rows]
    return sorted(out, key=lambda row: tuple((v is None, repr(v)) for v in row))


def table_rows(stores: Stores, table: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows of ``table`` in DuckDB and in PostgreSQL, normalized."""
    query = f"SELECT * FROM {table}"
    return (
        normalized(stores.duck.execute(query).fetchall()),
        normalized(stores.pg.execute(query).fetchall()),
    )


def assert_same_tables(stores: Stores) -> list[tuple[Any, ...]]:
    """Published and summary rows are the same in both stores; the published rows."""
    duck_published, pg_published = table_rows(stores, TABLES.published)
    assert pg_published == duck_published
    duck_summary, pg_summary = table_rows(stores, TABLES.summary)
    assert pg_summary == duck_summary
    return duck_published


def both_plans(
    stores: Stores,
    tmp_path: Path,
    source: SourceTable,
    partitions: Sequence[Partition],
    **options: Any,
) -> tuple[duck_plan.RunPlan, list[tuple[Any, ...]]]:
    """Plan in both, assert equal plans and spools; the plan and the spool's rows."""
    duck_spool, pg_spool = tmp_path / "duck.parquet", tmp_path / "pg.parquet"
    expected = duck_plan.plan_run(
        stores.duck, source, partitions, tables=TABLES, now=NOW, spool=duck_spool, **options
    )
    got = pg_plan.plan_run(
        stores.pg, source, partitions, tables=TABLES, now=NOW, spool=pg_spool, **options
    )
    assert got == expected
    # Every distinct number is either fresh or sent (a cache row of an error is sent again).
    assert all(s.fresh + s.to_send == s.distinct_valid for s in expected.sets)
    with duckdb.connect() as reader:

        def read(path: Path, what: str = "") -> list[tuple[Any, ...]]:
            return reader.execute(f"{what} SELECT * FROM read_parquet('{path}')").fetchall()

        to_send = read(pg_spool)
        assert to_send == read(duck_spool)  # the same rows in the same order
        assert read(pg_spool, "DESCRIBE") == read(duck_spool, "DESCRIBE")
    assert len(to_send) == expected.to_send
    assert stat.S_IMODE(os.stat(pg_spool).st_mode) == 0o600
    return expected, to_send


def both_publish(
    stores: Stores, source: SourceTable, partitions: Sequence[Partition], **options: Any
) -> list[PartitionOutcome]:
    """Publish in both, assert equal outcomes and tables; the outcomes."""
    options = {"run_id": RUN, "now": NOW, "freshness": FRESHNESS, **options}
    expected = duck_publish.publish_partitions(
        stores.duck, source, partitions, tables=TABLES, **options
    )
    got = pg_publish.publish_partitions(stores.pg, source, partitions, tables=TABLES, **options)
    assert got == expected

    def exactly(outcomes: list[PartitionOutcome]) -> list[tuple[Any, ...]]:
        # What == on the outcomes does not see: the cost's scale, the histograms' order.
        return [(str(o.cost), [*o.by_status.items()], [*o.by_operator.items()]) for o in outcomes]

    assert exactly(got) == exactly(expected)
    published = assert_same_tables(stores)
    for outcome in (o for o in expected if o.published):
        # The counts taken before the insert (the tally) are those of the rows it wrote.
        rows = [row for row in published if row[0] == outcome.set_id]
        assert outcome.rows == len(rows)
        assert outcome.numbers == len({row[2] for row in rows if row[3]})
        assert outcome.sent == len({row[2] for row in rows if row[12] == "provider"})
    return expected


@pytest.mark.parametrize("force_refresh", [False, True], ids=["incremental", "forced"])
def test_plan_matches_duckdb(stores: Stores, tmp_path: Path, force_refresh: bool) -> None:
    """Same counts per partition, same total, same spool (rows, order, reasons, schema)."""
    stores.seed_sets(SETS | {"uncached": [*NUMBERS[30:34], NUMBERS[0]]})
    stores.insert(TABLES.cache, cache_rows())
    plan, to_send = both_plans(
        stores,
        tmp_path,
        SourceTable(),
        [*PARTITIONS, Partition("uncached")],
        freshness=FRESHNESS,
        force_refresh=force_refresh,
    )
    by_key = {s.set_id: s for s in plan.sets}
    assert by_key["nothing"] == duck_plan.SetPlan("nothing", 0, 0, 0, 0, 0)
    assert by_key["alpha"].invalid > 0
    assert by_key["Beta"].distinct_valid == 12
    reasons = {reason for _, _, reason in to_send}
    if force_refresh:
        assert plan.to_send == len(set(NUMBERS[:34]))
        assert reasons == {"forced"}
    else:
        assert 0 < plan.to_send < len(set(NUMBERS[:34]))
        assert reasons == {"new", "stale", "retry"}


def test_plan_matches_duckdb_across_many_bitmap_words(stores: Stores, tmp_path: Path) -> None:
    """PostgreSQL sends each number's verdict back as one bit of a 63-bit word: with 700
    numbers (12 words, every bit position used), some in two sets, every kind of cache row
    and a fifth of them uncached, the plan and spool are still the DuckDB store's."""
    numbers = sample_numbers(700, seed=5)
    stores.seed_sets(
        {"one": numbers[:400], "two": numbers[300:], "three": [*numbers[::7], "bad", None]}
    )
    stores.insert(TABLES.cache, cache_rows(numbers[:560]))
    plan, to_send = both_plans(
        stores,
        tmp_path,
        SourceTable(),
        [Partition(k) for k in ("one", "two", "three")],
        freshness=FRESHNESS,
    )
    assert sum(s.distinct_valid for s in plan.sets) > 700  # numbers in two sets count in both
    assert 140 < plan.to_send < 700
    assert {reason for _, _, reason in to_send} == {"new", "stale", "retry"}


def test_plan_numbers_are_never_committed(
    stores: Stores, postgres_url: str, tmp_path: Path
) -> None:
    """The numbers a plan joins with the cache live in a shared table without ever being
    committed: a plan beside another plan's open transaction (its rows copied in and
    analyzed) neither waits for it nor sees its rows, and leaves no row behind."""
    stores.seed_sets(SETS)
    stores.insert(TABLES.cache, cache_rows())
    pg_schema.ensure_plan_numbers(stores.pg, TABLES)
    table = pg_schema.plan_numbers_table(TABLES)
    with PostgresTarget(postgres_url).connect()() as other:
        with other.transaction():
            # Another plan, mid-way: its numbers (one of them a number of this plan's
            # partitions, in another word and bit) copied in and analyzed.
            with other.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                for word, mobile in enumerate([NUMBERS[1], *NUMBERS[30:40]]):
                    copy.write_row((word, word % 63, mobile))
            other.execute(f"ANALYZE {table}")
            stores.pg.execute("SET lock_timeout = '10s'")  # a wait fails the test, not hangs it
            both_plans(stores, tmp_path, SourceTable(), PARTITIONS, freshness=FRESHNESS)
            assert other.execute(f"SELECT count(*) FROM {table}").fetchone() == (11,)
        assert other.execute(f"SELECT count(*) FROM {table}").fetchone() == (11,)
        other.execute(f"DELETE FROM {table}")
    assert stores.pg.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_publish_matches_duckdb(stores: Stores) -> None:
    """Same outcomes, published rows and summary; a partition with a missing answer keeps its
    earlier rows; an empty partition publishes nothing; forced, only this run's answers count."""
    stores.seed_sets(SETS)
    stores.insert(TABLES.cache, usable_cache_rows())
    first = both_publish(stores, SourceTable(), PARTITIONS, run_id="run-1")
    assert [o.published for o in first] == [True] * len(SETS) + [False]
    assert first[-1].empty
    held_before = [row for row in assert_same_tables(stores) if row[0] == "held"]
    assert held_before
    assert {row[-1] for row in held_before} == {"run-1"}
    rejected = [row for row in assert_same_tables(stores) if row[2] == NUMBERS[5]]
    assert rejected
    assert {(row[3], row[4]) for row in rejected} == {(False, PROVIDER_REJECTED)}

    # One of the held set's answers grows stale; this run's attempts are audited.
    stores.execute(
        f"UPDATE {TABLES.cache} SET checked_at = ?, run_id = 'run-0' WHERE mobile = ?",
        [NOW - 60 * DAY, NUMBERS[26]],
    )
    stores.insert(TABLES.audit, audit_rows())
    second = {o.set_id: o for o in both_publish(stores, SourceTable(), PARTITIONS)}
    assert second["held"] == PartitionOutcome("held", published=False, missing=1)
    assert [row for row in assert_same_tables(stores) if row[0] == "held"] == held_before
    assert second["nothing"].empty
    assert (second["alpha"].billed, second["alpha"].cost) == (2, Decimal("0.1"))
    assert second["Beta"].possibly_billed == 1
    assert (second[ODD].numbers, second[ODD].possibly_billed) == (0, 1)
    assert second["alpha"].ported > 0

    forced = {
        o.set_id: o for o in both_publish(stores, SourceTable(), PARTITIONS, force_refresh=True)
    }
    assert not forced["alpha"].published
    assert forced[ODD].published


def test_time_window_partitions_match_duckdb(stores: Stores, tmp_path: Path) -> None:
    """Partitions as time windows over a table of its own, numbers stored as integers, and
    names with a quote, a space and a percent sign (quoted, never taken as a placeholder)."""
    table = '"call log%s"'
    ddl = f'CREATE TABLE {table} ("dialled %(x)s" BIGINT, "at" TIMESTAMPTZ)'
    stores.duck.execute(ddl)
    stores.pg.execute(ddl)
    start = datetime(2025, 5, 1, tzinfo=UTC)
    rows: list[tuple[Any, ...]] = []
    for i, mobile in enumerate(NUMBERS[:30]):
        rows.append((int(mobile), start + i * timedelta(hours=7)))  # days 0..8
    rows += [(int(NUMBERS[3]), start + DAY), (None, start), (12345, start + 2 * DAY)]
    stores.insert(table, rows)
    stores.insert(TABLES.cache, cache_rows())
    source = SourceTable(
        table="call log%s", mobile_column="dialled %(x)s", set_column=None, time_column="at"
    )
    days = [
        Partition(f"2025-05-{d + 1:02d}", start + d * DAY, start + (d + 1) * DAY)
        for d in (0, 1, 2, 3, 20)
    ]
    plan, _ = both_plans(stores, tmp_path, source, days, freshness=FRESHNESS)
    assert [s.rows for s in plan.sets] == [5, 4, 5, 3, 0]  # a row every 7 h, and 3 more
    stores.execute(f"DELETE FROM {TABLES.cache}")
    stores.insert(TABLES.cache, usable_cache_rows())
    outcomes = both_publish(stores, source, days)
    assert [o.published for o in outcomes] == [True, True, True, True, False]


def test_check_source_exists_matches_duckdb(stores: Stores) -> None:
    """The same ConfigurationError, naming the same setting, for a missing table or column."""
    stores.execute('CREATE TABLE "Numbers" (phone VARCHAR, batch VARCHAR, loaded TIMESTAMPTZ)')
    cases = [
        SourceTable(),  # number_sets: exists
        SourceTable(table="Numbers", mobile_column="phone", set_column="batch"),
        SourceTable(table="no_such_table"),
        SourceTable(table="no_schema.number_sets"),
        SourceTable(table="Numbers", mobile_column="mobile", set_column="batch"),
        SourceTable(table="Numbers", mobile_column="phone", set_column="set_id"),
        SourceTable(table="Numbers", mobile_column="phone", set_column=None, time_column="when"),
        SourceTable(table="a..b"),
    ]
    for source in cases:
        expected = refusal(functools.partial(source.check_exists, stores.duck))
        got = refusal(functools.partial(pg_plan.check_source_exists, stores.pg, source))
        assert got == expected, source
    assert refusal(lambda: pg_plan.check_source_exists(stores.pg, cases[2])) == (
        "source_table | source_table: table 'no_such_table' does not exist in the database"
    )
    # PostgreSQL only: quoted names are case-sensitive (DuckDB's are not), as in the run's
    # queries; a name PostgreSQL refuses is a missing table, and the session stays usable.
    for table in ("numbers", "a.b.c.d", "other_db.public.number_sets"):
        source = SourceTable(table=table)
        assert refusal(functools.partial(pg_plan.check_source_exists, stores.pg, source)) == (
            f"source_table | source_table: table {table!r} does not exist in the database"
        )
    assert stores.pg.execute("SELECT 1").fetchone() == (1,)


def refusal(check: Callable[[], None]) -> str | None:
    """The ConfigurationError ``check`` raises, as ``setting: problem``; ``None`` if none."""
    try:
        check()
    except ConfigurationError as error:
        return f"{error.setting} | {error}"
    return None


def test_scratch_files_are_private_and_removed(
    stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file holding numbers is 0600 in a 0700 directory while it exists; nothing is
    left once planning and publishing are done, also when publishing fails."""
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir(mode=0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    modes: list[tuple[int, int]] = []

    def spy(function: Any, path_argument: int) -> Any:
        def wrapped(*args: Any) -> Any:
            path = Path(args[path_argument])
            modes.append(
                (stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(path.parent.stat().st_mode))
            )
            return function(*args)

        return wrapped

    copy_out, copy_in = spy(run_rows.copy_out, 3), spy(run_rows.copy_in, 2)
    for module in (run_rows, pg_plan):
        monkeypatch.setattr(module, "copy_out", copy_out)
        monkeypatch.setattr(module, "copy_in", copy_in)
    stores.seed_sets(SETS)
    stores.insert(TABLES.cache, usable_cache_rows())
    pg_plan.plan_run(
        stores.pg,
        SourceTable(),
        PARTITIONS,
        tables=TABLES,
        freshness=FRESHNESS,
        now=NOW,
        spool=tmp_path / "spool.parquet",
    )
    pg_publish.publish_partitions(
        stores.pg,
        SourceTable(),
        PARTITIONS,
        tables=TABLES,
        run_id=RUN,
        freshness=FRESHNESS,
        now=NOW,
    )
    # plan: source out, numbers in, verdicts out; publish: source out, rows in
    assert len(modes) == 5
    assert set(modes) == {(0o600, 0o700)}
    assert list(scratch_root.iterdir()) == []

    stores.pg.execute(f"DROP TABLE {TABLES.cache}")
    with pytest.raises(psycopg.errors.UndefinedTable):
        pg_publish.publish_partitions(
            stores.pg,
            SourceTable(),
            PARTITIONS,
            tables=TABLES,
            run_id=RUN,
            freshness=FRESHNESS,
            now=NOW,
        )
    assert list(scratch_root.iterdir()) == []


def test_first_partition_is_by_code_point_whatever_the_collation(
    postgres_url: str, tmp_path: Path
) -> None:
    """A number in "alpha" and "Beta" belongs to "Beta" (code point order, as in DuckDB),
    also in a database whose collation sorts "alpha" first."""
    admin = PostgresTarget(postgres_url)
    name = f"{postgres_url.rsplit('/', 1)[1]}_icu"
    with admin.connect()() as conn:
        try:
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                ).format(sql.Identifier(name))
            )
        except psycopg.Error as error:
            pytest.skip(f"no ICU collation on this server: {error}")
    try:
        url = postgres_url.rsplit("/", 1)[0] + "/" + name
        with PostgresTarget(url).connect()() as pg:
            row = pg.execute("SELECT 'alpha' < 'Beta'").fetchone()
            assert row == (True,)  # the database's own order
            duck = duckdb.connect()
            duck_schema.ensure_schema(duck, TABLES)
            duck.execute(duck_schema.SOURCE_DDL)
            pg_schema.ensure_schema(pg, TABLES)
            pg_schema.create_default_source(pg)
            stores = Stores(duck, pg)
            stores.seed_sets({"alpha": NUMBERS[:3], "Beta": NUMBERS[1:4]})
            plan, to_send = both_plans(
                stores,
                tmp_path,
                SourceTable(),
                [Partition("alpha"), Partition("Beta")],
                freshness=FRESHNESS,
            )
            assert [s.to_send for s in plan.sets] == [3, 3]
            assert [(mobile, set_id) for mobile, set_id, _ in to_send] == [
                (NUMBERS[1], "Beta"),
                (NUMBERS[2], "Beta"),
                (NUMBERS[3], "Beta"),
                (NUMBERS[0], "alpha"),
            ]
            duck.close()
    finally:
        with admin.connect()() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
