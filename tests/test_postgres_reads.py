"""The PostgreSQL read side (reports, asset checks, summaries) gives what DuckDB's gives.

The DuckDB modules are the oracle: the same rows are written into the library's tables
in a DuckDB file and in a PostgreSQL database, with the problems the checks exist for
(an answer whose order number is not in the audit, a billed answer without one, billed
order numbers used twice, a number billed twice while fresh, a forced refresh that may,
published partitions missing numbers), and every function must return equal results on
both: the same outcomes, counts, masked examples and order.

Each case runs twice: in a database of the test server's collation (``C``) and in one
whose default collation is ICU ``en-US``, which sorts ``set-a`` before ``Set-B`` where
DuckDB (by code point) puts it after.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import psycopg
import pytest
from psycopg import sql

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store import audit_checks, reports, schema, summaries
from mobile_status_dagster.core.store.postgres import audit_checks as pg_audit_checks
from mobile_status_dagster.core.store.postgres import reports as pg_reports
from mobile_status_dagster.core.store.postgres import schema as pg_schema
from mobile_status_dagster.core.store.postgres import summaries as pg_summaries
from mobile_status_dagster.core.store.postgres.connection import PostgresTarget
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable
from tests.postgres_server import PostgresServerInfo

PgConnection = psycopg.Connection[tuple[object, ...]]
Row = tuple[object, ...]

TABLES = Tables("crm_")
"""A prefix, so the quoted, prefixed names are exercised too."""
SOURCE = SourceTable()
T0 = datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC)
"""Near midnight UTC: the charges fall on more than one day."""
DAY = timedelta(days=1)
FRESHNESS = Freshness(max_age=30 * DAY, by_status={Status.UNAVAILABLE: DAY})

SET_A = "set-a"
SET_B = "Set-B"
HOSTILE = "o'brien; drop table x"
UNPUBLISHED = "unpublished"
EMPTY = "no rows"
ALL_SETS = (SET_A, SET_B, HOSTILE, UNPUBLISHED, EMPTY)
RUNS = ("r1", "r2", "r3", "r4", "r5", "nobody")

SOURCE_COLUMNS = ("set_id", "mobile")
CACHE_COLUMNS = (
    "mobile",
    "status_code",
    "status",
    "operator",
    "order_number",
    "provider_code",
    "checked_at",
    "run_id",
)
AUDIT_COLUMNS = (
    "order_number",
    "mobile",
    "provider_code",
    "provider_message",
    "status_code",
    "operator",
    "billed",
    "possibly_billed",
    "unit_price",
    "currency",
    "set_id",
    "run_id",
    "requested_at",
    "latency_ms",
    "attempt",
    "http_status",
    "error",
    "reason",
)
PUBLISHED_COLUMNS = (
    "set_id",
    "mobile_raw",
    "mobile",
    "valid",
    "invalid_reason",
    "status_code",
    "status",
    "operator",
    "prefix_operator",
    "ported",
    "order_number",
    "checked_at",
    "source",
    "run_id",
)


# --- the rows -----------------------------------------------------------------------------


def source_rows() -> list[Row]:
    return [
        (SET_A, "13800000001"),
        (SET_A, "13800000001"),  # the same number twice in a set
        (SET_A, "+86 138 0000 0002"),
        (SET_A, "13800000003"),
        (SET_A, "13800000004"),  # never published: a coverage problem
        (SET_A, "13800000005"),  # published without an answer: a coverage problem
        (SET_A, "12345"),  # invalid
        (SET_B, "13900000001"),
        (SET_B, "13900000002"),
        (HOSTILE, "13700000001"),
        (UNPUBLISHED, "13600000001"),
    ]


def answer(status: Status | None) -> tuple[int | None, str | None]:
    return (None, None) if status is None else (int(status), status.label)


def cached(
    mobile: str,
    status: Status | None,
    order: str | None,
    at: datetime,
    run: str,
    operator: str | None = "CM",
) -> Row:
    code, label = answer(status)
    provider = 2000 if status is not None else 5000
    return (mobile, code, label, operator, order, provider, at, run)


def call(
    mobile: str,
    run: str,
    at: datetime,
    *,
    order: str | None,
    status: Status | None = Status.ONLINE,
    operator: str | None = "CM",
    price: str = "0.030000",
    currency: str = "CNY",
    set_id: str | None = SET_A,
    reason: str = "new",
    possibly_billed: bool = False,
) -> Row:
    billed = status is not None and status.billed
    code = None if status is None else int(status)
    return (
        order,
        mobile,
        2000 if billed else 5000,
        "ok" if billed else "busy",
        code,
        operator,
        billed,
        possibly_billed,
        Decimal(price),
        currency,
        set_id,
        run,
        at,
        12.5,
        1,
        200,
        None if billed else "provider busy",
        reason,
    )


def published(
    set_id: str,
    raw: str,
    mobile: str | None,
    status: Status | None,
    order: str | None,
    run: str,
    *,
    operator: str | None = "CM",
    invalid_reason: str | None = None,
    ported: bool | None = False,
) -> Row:
    code, label = answer(status)
    checked = None if status is None else T0
    return (
        set_id,
        raw,
        mobile,
        mobile is not None,
        invalid_reason,
        code,
        label,
        operator,
        "CM" if mobile is not None else None,
        ported,
        order,
        checked,
        "provider" if status is not None else "none",
        run,
    )


def cache_rows() -> list[Row]:
    rows = [
        cached("13800000001", Status.ONLINE, "o-1x", T0 + 2 * DAY, "r2"),
        cached("13800000002", Status.POWERED_OFF, "o-2f", T0 + 3 * DAY, "r3", "ct"),
        cached("13800000003", Status.ONLINE, "o-missing", T0, "r1"),  # not in the audit
        cached("13800000005", None, None, T0, "r1", None),
        cached("13900000001", Status.ONLINE, "o-dup", T0 + 2 * DAY, "r2", "CU"),
        cached("13900000002", Status.ONLINE, None, T0 + 2 * DAY, "r2"),  # no order number
        cached("13700000001", Status.UNAVAILABLE, "o-7b", T0 + 5 * DAY, "r4", None),
    ]
    rows += [
        cached(f"135000000{i:02d}", Status.ONLINE, order, T0 + 6 * DAY, "r5")
        for i, order in enumerate(DUPLICATED * 2)
    ]
    return rows


DUPLICATED = ("dup-a", "Dup-b", "dup-c", "DUP-d", "dup-E", "dup-f")
"""Order numbers billed twice each (on different numbers): more problems than examples,
and a code-point order unlike a linguistic one."""


def audit_rows() -> list[Row]:
    rows = [
        call("13800000001", "r1", T0, order="o-1"),
        call("13800000002", "r1", T0 + timedelta(seconds=1), order="o-2", status=Status.VACANT),
        call(  # an unknown answer, maybe billed, from a fold that lost its set id
            "13800000005",
            "r1",
            T0 + timedelta(seconds=2),
            order=None,
            status=None,
            currency="cny",
            set_id=None,
            possibly_billed=True,
        ),
        # Billed again while the answer of r1 was fresh: double billing.
        call("13800000001", "r2", T0 + 2 * DAY, order="o-1x", reason="stale"),
        # The same order number twice, on one number, a minute apart: both problems.
        call("13900000001", "r2", T0 + 2 * DAY, order="o-dup", set_id=SET_B, operator="CU"),
        call(
            "13900000001",
            "r2",
            T0 + 2 * DAY + timedelta(minutes=1),
            order="o-dup",
            set_id=SET_B,
            operator="CU",
            reason="retry",
        ),
        call("13900000002", "r2", T0 + 2 * DAY, order=None, set_id=SET_B),  # no order number
        # A forced refresh may bill a fresh number again.
        call(
            "13800000002",
            "r3",
            T0 + 3 * DAY,
            order="o-2f",
            status=Status.POWERED_OFF,
            operator="ct",
            reason="forced",
        ),
        call(
            "13700000001",
            "r3",
            T0 + 3 * DAY,
            order="o-7",
            status=Status.UNAVAILABLE,
            operator=None,
            set_id=HOSTILE,
        ),
        # Two days later: past the one-day max age of ``unavailable``, no double billing.
        call(
            "13700000001",
            "r4",
            T0 + 5 * DAY,
            order="o-7b",
            status=Status.UNAVAILABLE,
            operator=None,
            set_id=HOSTILE,
            reason="stale",
        ),
    ]
    rows += [
        call(
            f"135000000{i:02d}",
            "r5",
            T0 + 6 * DAY + timedelta(seconds=i),
            order=order,
            price="0.004500",
            currency="EUR",
            set_id=None,
        )
        for i, order in enumerate(DUPLICATED * 2)
    ]
    return rows


def published_rows() -> list[Row]:
    return [
        published(SET_A, "13800000001", "13800000001", Status.ONLINE, "o-1", "r1"),
        published(SET_A, "13800000001", "13800000001", Status.ONLINE, "o-1", "r1"),
        published(SET_A, "+86 138 0000 0002", "13800000002", Status.VACANT, "o-2", "r1"),
        published(SET_A, "13800000003", "13800000003", Status.ONLINE, "o-missing", "r1"),
        published(SET_A, "13800000005", "13800000005", None, None, "r1", operator=None),
        published(
            SET_A, "12345", None, None, None, "r1", operator=None, invalid_reason="wrong_length"
        ),
        published(SET_B, "13900000001", "13900000001", Status.ONLINE, "o-dup", "r2", operator="CU"),
        published(SET_B, "13900000002", "13900000002", Status.ONLINE, None, "r2", operator="ct"),
        published(
            HOSTILE, "13700000001", "13700000001", Status.UNAVAILABLE, "o-7", "r3", operator=None
        ),
    ]


# --- the two stores ------------------------------------------------------------------------


@dataclass
class Stores:
    """The same rows in DuckDB (the oracle) and in PostgreSQL."""

    duck: duckdb.DuckDBPyConnection
    pg: PgConnection


def insert_duckdb(
    conn: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], rows: list[Row]
) -> None:
    marks = ", ".join("?" for _ in columns)
    conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def copy_postgres(conn: PgConnection, table: str, columns: Sequence[str], rows: list[Row]) -> None:
    with (
        conn.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def fill(insert: Callable[[str, Sequence[str], list[Row]], None]) -> None:
    """Write every row with ``insert(table, columns, rows)``: the same rows in both stores."""
    insert(schema.DEFAULT_SOURCE, SOURCE_COLUMNS, source_rows())
    insert(TABLES.cache, CACHE_COLUMNS, cache_rows())
    insert(TABLES.audit, AUDIT_COLUMNS, audit_rows())
    insert(TABLES.published, PUBLISHED_COLUMNS, published_rows())


@contextlib.contextmanager
def icu_database(server: PostgresServerInfo) -> Iterator[str]:
    """A new database whose default collation is ICU ``en-US``, dropped on exit."""
    name = f"test_icu_{uuid.uuid4().hex}"
    with server.connect() as conn:
        try:
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                ).format(sql.Identifier(name))
            )
        except psycopg.Error as error:
            pytest.skip(f"no ICU collation on the test server: {error}")
    try:
        yield server.with_dbname(name).url
    finally:
        with contextlib.suppress(psycopg.Error), server.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def database(server: PostgresServerInfo, collation: str) -> Iterator[str]:
    """A fresh empty database of the server's collation (``C``) or of ICU ``en-US``."""
    if collation == "C":
        with server.fresh_database() as info:
            yield info.url
    else:
        with icu_database(server) as url:
            yield url


@pytest.fixture(scope="module", params=["C", "en-US"])
def stores(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServerInfo,
) -> Iterator[Stores]:
    """The rows in a new DuckDB file and a new PostgreSQL database, shared by the module's
    tests (what :func:`postgres_url` gives, made once per collation to keep the file fast).

    The tests only read, but for the rebuilds, which write the derived tables alone, and
    no test reads those but the one that rebuilds them.
    """
    duck = duckdb.connect(str(tmp_path_factory.mktemp("oracle") / "oracle.duckdb"))
    schema.ensure_schema(duck, TABLES)
    duck.execute(schema.SOURCE_DDL)
    fill(lambda table, columns, rows: insert_duckdb(duck, table, columns, rows))
    with (
        database(postgres_server, request.param) as url,
        PostgresTarget(url).connect()() as pg,
    ):
        # The en-US database orders text unlike DuckDB, or the case proves nothing.
        linguistic = pg.execute("SELECT %s < %s", [SET_A, SET_B]).fetchone()
        assert linguistic == (request.param != "C",)
        pg_schema.ensure_schema(pg, TABLES)
        pg_schema.create_default_source(pg)
        fill(lambda table, columns, rows: copy_postgres(pg, table, columns, rows))
        try:
            yield Stores(duck, pg)
        finally:
            duck.close()


def to_partitions(keys: Sequence[str]) -> list[Partition]:
    return [Partition(key) for key in keys]


def table_rows(conn: duckdb.DuckDBPyConnection | PgConnection, table: str) -> list[Row]:
    """Every row of ``table``, sorted in Python (the stores' orders of text differ)."""
    rows = [tuple(row) for row in conn.execute(f"SELECT * FROM {table}").fetchall()]
    return sorted(rows, key=lambda row: tuple((value is None, str(value)) for value in row))


# --- reports -------------------------------------------------------------------------------


def test_reports_match_duckdb(stores: Stores) -> None:
    duck, pg = stores.duck, stores.pg
    for set_ids in (ALL_SETS, [SET_B], []):
        expected_counts = reports.status_counts(duck, set_ids, tables=TABLES)
        assert pg_reports.status_counts(pg, set_ids, tables=TABLES) == expected_counts
        expected_charges = reports.charges_by_set(duck, set_ids, tables=TABLES)
        assert pg_reports.charges_by_set(pg, set_ids, tables=TABLES) == expected_charges
    for run_ids in (RUNS, ["r1"], ["r5"], []):
        expected = reports.charges_for_runs(duck, run_ids, tables=TABLES)
        assert pg_reports.charges_for_runs(pg, run_ids, tables=TABLES) == expected
    assert pg_reports.published_set_ids(pg, tables=TABLES) == reports.published_set_ids(
        duck, tables=TABLES
    )
    for run_id in RUNS:
        assert pg_reports.set_ids_published_by(
            pg, run_id, tables=TABLES
        ) == reports.set_ids_published_by(duck, run_id, tables=TABLES)

    # Not equal by being empty: the rows are there, in DuckDB's order.
    assert pg_reports.published_set_ids(pg, tables=TABLES) == [SET_B, HOSTILE, SET_A]
    counts = pg_reports.status_counts(pg, [SET_B], tables=TABLES)
    assert [(c.operator, c.rows) for c in counts] == [("CU", 1), ("ct", 1)]
    by_currency = pg_reports.charges_for_runs(pg, RUNS, tables=TABLES)
    assert [c.currency for c in by_currency] == ["CNY", "EUR", "cny"]
    assert by_currency[1].cost == Decimal("0.054")
    assert by_currency[2].possibly_billed == 1


# --- asset checks --------------------------------------------------------------------------


def test_audit_checks_match_duckdb(stores: Stores) -> None:
    duck, pg = stores.duck, stores.pg
    outcomes: dict[tuple[str, str | None], audit_checks.CheckOutcome] = {}
    for run_id in (None, *RUNS):
        expected_coverage = audit_checks.coverage(
            duck, SOURCE, to_partitions, tables=TABLES, run_id=run_id
        )
        assert (
            pg_audit_checks.coverage(pg, SOURCE, to_partitions, tables=TABLES, run_id=run_id)
            == expected_coverage
        ), run_id
        expected_audit = audit_checks.audit_reconciliation(duck, tables=TABLES, run_id=run_id)
        assert (
            pg_audit_checks.audit_reconciliation(pg, tables=TABLES, run_id=run_id) == expected_audit
        ), run_id
        expected_billing = audit_checks.no_double_billing(
            duck, FRESHNESS, tables=TABLES, run_id=run_id
        )
        assert (
            pg_audit_checks.no_double_billing(pg, FRESHNESS, tables=TABLES, run_id=run_id)
            == expected_billing
        ), run_id
        outcomes |= {
            ("coverage", run_id): expected_coverage,
            ("audit", run_id): expected_audit,
            ("billing", run_id): expected_billing,
        }

    # The planted problems are found (the stores agree on something).
    assert outcomes["coverage", None].examples == ["set-a: 138****0004", "set-a: 138****0005"]
    assert outcomes["coverage", "r2"].passed
    assert outcomes["audit", None].detail == {
        "answers_without_audit": 2,
        "duplicated_order_numbers": 7,
    }
    assert outcomes["audit", None].examples == [
        "not in audit: o-missing",
        "not in audit: None",
        "duplicated: DUP-d",
        "duplicated: Dup-b",
        "duplicated: dup-E",
        "duplicated: dup-a",
        "duplicated: dup-c",
    ]
    assert outcomes["audit", "r2"].detail == {
        "answers_without_audit": 1,
        "duplicated_order_numbers": 1,
    }
    assert outcomes["audit", "r4"].passed
    assert outcomes["billing", None].examples == [
        "138****0001 billed again as o-1x",
        "139****0001 billed again as o-dup",
    ]
    assert outcomes["billing", "r3"].passed  # the forced refresh
    assert outcomes["billing", "r4"].passed  # past the max age of ``unavailable``


# --- summaries -----------------------------------------------------------------------------


def test_summaries_match_duckdb(stores: Stores) -> None:
    duck, pg = stores.duck, stores.pg
    assert pg_summaries.rebuild_summary(pg, tables=TABLES) == summaries.rebuild_summary(
        duck, tables=TABLES
    )
    assert pg_summaries.rebuild_charges(pg, tables=TABLES) == summaries.rebuild_charges(
        duck, tables=TABLES
    )
    for table in (TABLES.summary, TABLES.charges):
        assert table_rows(pg, table) == table_rows(duck, table), table
        assert pg_summaries.row_count(pg, table) == summaries.row_count(duck, table)
    assert pg_summaries.summary_by_set_and_status(
        pg, tables=TABLES
    ) == summaries.summary_by_set_and_status(duck, tables=TABLES)
    assert pg_summaries.charges_totals(pg, tables=TABLES) == summaries.charges_totals(
        duck, tables=TABLES
    )

    stale: dict[datetime, list[str]] = {}
    partitions = to_partitions(ALL_SETS)
    for now in (T0 + 5 * DAY + timedelta(hours=1), T0 + 10 * DAY, T0 + 40 * DAY):
        for chosen in (partitions, partitions[1:], []):
            expected = summaries.stale_partitions(
                duck, SOURCE, chosen, tables=TABLES, freshness=FRESHNESS, now=now
            )
            assert (
                pg_summaries.stale_partitions(
                    pg, SOURCE, chosen, tables=TABLES, freshness=FRESHNESS, now=now
                )
                == expected
            ), (now, chosen)
            if chosen == partitions:
                stale[now] = expected

    assert pg_summaries.charges_totals(pg, tables=TABLES)[0][:3] == ("CNY", 9, 9)
    assert list(stale.values()) == [
        [SET_A, UNPUBLISHED],
        [HOSTILE, SET_A, UNPUBLISHED],
        [SET_B, HOSTILE, SET_A, UNPUBLISHED],
    ]
