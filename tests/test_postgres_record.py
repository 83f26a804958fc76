"""Folding journal segments into PostgreSQL gives exactly the rows DuckDB's fold gives.

The DuckDB store is the oracle: the same segments, written by the real :class:`Journal`,
are folded into a DuckDB file and into a PostgreSQL database, and the audit, the cache,
the charges and the folded-segment records must be equal, row for row and type for type.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO

import duckdb
import psycopg
import pytest

from mobile_status_dagster.core.client.results import Attempt, CheckResult
from mobile_status_dagster.core.engine.journal import Journal
from mobile_status_dagster.core.errors import (
    MobileStatusError,
    NumberRejectedError,
    OperatorRefusedError,
    ProviderInternalError,
    ResponseTimeoutError,
    UntrustedFileError,
)
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store import record, schema
from mobile_status_dagster.core.store.postgres import record as pg_record
from mobile_status_dagster.core.store.postgres import schema as pg_schema
from mobile_status_dagster.core.store.postgres.connection import PostgresTarget
from mobile_status_dagster.core.store.record import FoldResult
from mobile_status_dagster.core.store.schema import Tables

PgConnection = psycopg.Connection[tuple[object, ...]]
Row = tuple[object, ...]

TABLES = Tables("crm_")
"""A prefix, so the quoted names and the prefixed keys are exercised too."""
START = datetime(2024, 5, 1, 23, 59, 58, 123457, tzinfo=UTC)
"""Near midnight UTC: a run's attempts fall on two days of the charges."""
HOSTILE_SETS = ("s1", "o'brien; drop table x", 'comma, "quote"\nnew line\n\\.\n', "")


# --- segments written by the real journal ------------------------------------------------


def attempt(
    number: int,
    at: datetime,
    *,
    status: Status | None = None,
    operator: str | None = None,
    order: str | None = None,
    code: int | None = 2000,
    message: str | None = "ok",
    possibly_billed: bool = False,
    http_status: int | None = 200,
    error: MobileStatusError | None = None,
) -> Attempt:
    return Attempt(
        attempt=number,
        requested_at=at,
        latency_ms=1.0 / 3.0 + number,  # a float that needs all its digits
        http_status=http_status,
        code=code,
        message=message,
        order_number=order,
        status=status,
        operator=operator,
        billed=status is not None and status.billed,
        possibly_billed=possibly_billed,
        error=error,
    )


def answered(mobile: str, status: Status, at: datetime, *, retried: bool = False) -> CheckResult:
    """A definitive answer (``retried``: after a provider 5000)."""
    attempts = []
    if retried:
        failure = ProviderInternalError(5000, "internal error")
        attempts.append(attempt(1, at, code=5000, message="internal error", error=failure))
        at += timedelta(milliseconds=250)
    order = None if status is Status.UNKNOWN else f"ORD{mobile}{at.microsecond:06d}"
    operator = None if status is Status.UNKNOWN else "CM"
    attempts.append(
        attempt(len(attempts) + 1, at, status=status, operator=operator, order=order, message="")
    )
    last = attempts[-1]
    return CheckResult(mobile, status, operator, order, 2000, last.message, tuple(attempts), None)


def refused(mobile: str, at: datetime) -> CheckResult:
    """5001 three times: recorded as unknown (the journal's ``keep_st``)."""
    error = OperatorRefusedError(5001, "operator refused")
    attempts = tuple(
        attempt(n, at + timedelta(seconds=n), code=5001, message=None, error=error)
        for n in (1, 2, 3)
    )
    return CheckResult(mobile, Status.UNKNOWN, None, None, 5001, None, attempts, None)


def rejected(mobile: str, at: datetime) -> CheckResult:
    """4003: the number is malformed; the cache keeps the rejection."""
    error = NumberRejectedError(4003, "bad number")
    one = attempt(1, at, code=4003, message="bad number", error=error)
    return CheckResult(mobile, None, None, None, 4003, "bad number", (one,), error)


def timed_out(mobile: str, at: datetime) -> CheckResult:
    """No answer, possibly billed: audited, charged as possibly billed, not cached."""
    error = ResponseTimeoutError("no answer in time")
    one = attempt(
        1, at, code=None, message=str(error), possibly_billed=True, http_status=None, error=error
    )
    return CheckResult(mobile, None, None, None, None, str(error), (one,), error)


def numbers(count: int, first: int = 13900000000) -> list[str]:
    return [str(first + i) for i in range(count)]


def write_run(
    directory: Path,
    run_id: str,
    results: Sequence[tuple[CheckResult, str]],
    *,
    price: str = "0.123456",
    segments: int = 1,
) -> list[Path]:
    """Journal ``results`` (each with its set id) for ``run_id``, in ``segments`` segments."""
    journal = Journal(directory, run_id, unit_price=Decimal(price), currency="CNY")
    paths = []
    per_segment = -(-len(results) // segments)
    for start in range(0, len(results), per_segment):
        for result, set_id in results[start : start + per_segment]:
            journal.write(result, set_id, "new")
        segment = journal.rotate()
        paths.append(segment.path)
        segment.release()
    journal.current.release()
    return paths


def mixed_results(mobiles: Sequence[str], at: datetime) -> list[tuple[CheckResult, str]]:
    """Every kind of outcome, over the hostile set ids, one number each."""
    makers: list[Callable[[str, datetime], CheckResult]] = [
        lambda m, t: answered(m, Status.ONLINE, t),
        lambda m, t: answered(m, Status.POWERED_OFF, t, retried=True),
        lambda m, t: answered(m, Status.UNKNOWN, t),
        refused,
        rejected,
        timed_out,
        lambda m, t: answered(m, Status.VACANT, t),
    ]
    return [
        (
            makers[i % len(makers)](mobile, at + timedelta(milliseconds=137 * i)),
            HOSTILE_SETS[i % len(HOSTILE_SETS)],
        )
        for i, mobile in enumerate(mobiles)
    ]


# --- the two stores ---------------------------------------------------------------------


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The oracle: a DuckDB file with the tables."""
    with duckdb.connect(str(tmp_path / "oracle.duckdb")) as conn:
        schema.ensure_schema(conn, TABLES)
        yield conn


@pytest.fixture
def pg(postgres_url: str) -> Iterator[PgConnection]:
    """A session of a fresh PostgreSQL database with the tables."""
    with PostgresTarget(postgres_url).connect()() as conn:
        pg_schema.ensure_schema(conn, TABLES)
        yield conn


def fold_both(
    duck: duckdb.DuckDBPyConnection, pg: PgConnection, path: Path
) -> tuple[FoldResult, FoldResult]:
    return (
        record.fold_segment(duck, path, tables=TABLES),
        pg_record.fold_segment(pg, path, tables=TABLES),
    )


def normal(value: object) -> object:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def sort_key(row: Row) -> list[tuple[bool, str]]:
    return [(value is None, str(value)) for value in row]


def rows_of(fetched: Sequence[Row]) -> list[Row]:
    return sorted((tuple(normal(v) for v in row) for row in fetched), key=sort_key)


STATE = {
    "audit": f"SELECT * FROM {TABLES.audit}",
    "cache": f"SELECT * FROM {TABLES.cache}",
    "charges": f"SELECT * FROM {TABLES.charges}",
    "segments": f"SELECT segment, run_id, attempts, answers FROM {TABLES.segments}",
}


def duck_state(conn: duckdb.DuckDBPyConnection) -> dict[str, list[Row]]:
    return {name: rows_of(conn.execute(sql).fetchall()) for name, sql in STATE.items()}


def pg_state(conn: PgConnection) -> dict[str, list[Row]]:
    return {name: rows_of(conn.execute(sql).fetchall()) for name, sql in STATE.items()}


def assert_same_state(duck: duckdb.DuckDBPyConnection, pg: PgConnection) -> dict[str, list[Row]]:
    """The two stores hold equal rows, with values of the same Python types."""
    expected, got = duck_state(duck), pg_state(pg)
    for name in STATE:
        assert got[name] == expected[name], name
        for want, have in zip(expected[name], got[name], strict=True):
            assert [type(v) for v in have] == [type(v) for v in want], (name, want, have)
    return got


# --- the tests --------------------------------------------------------------------------


def test_folding_into_postgres_gives_the_rows_duckdb_gives(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection, pg: PgConnection
) -> None:
    journal = tmp_path / "journal"
    mobiles = numbers(70)
    first = write_run(journal, "run-1", mixed_results(mobiles, START), segments=3)
    # A later run answers some of the numbers again, at another price.
    later = START + timedelta(hours=2)
    again = [(answered(m, Status.CANCELLED, later), "s1") for m in mobiles[:20]]
    second = write_run(journal, "run-2", again, price="0.05")
    for path in [*first, *second]:
        duck_result, pg_result = fold_both(duck, pg, path)
        assert pg_result == duck_result
        assert not pg_result.already_folded
        assert pg_result.attempts > 0
    state = assert_same_state(duck, pg)
    # Timed-out numbers are not cached, unless run-2 answered them.
    not_cached = [m for i, m in enumerate(mobiles) if i % 7 == 5 and i >= 20]
    assert {row[0] for row in state["cache"]} == set(mobiles) - set(not_cached)
    assert len(state["segments"]) == 4
    charged_days = {(row[0], row[2]) for row in state["charges"]}
    assert len({day for day, _ in charged_days}) == 2  # run-1 crossed midnight UTC
    assert {row[1] for row in state["charges"]} == set(HOSTILE_SETS)
    audit_money = {row[8] for row in state["audit"]} | {row[7] for row in state["charges"]}
    assert all(isinstance(value, Decimal) for value in audit_money)
    assert Decimal("0.123456") in audit_money


def test_charges_of_a_run_in_several_segments_add_up_also_without_a_set(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection, pg: PgConnection
) -> None:
    """Two segments of one run charge the same (day, set, run, currency) rows: the upsert
    adds, also for a line without a set id (NULL, the key's NULLS NOT DISTINCT)."""
    journal = Journal(tmp_path / "journal", "run-n", unit_price=Decimal("0.5"), currency="CNY")
    paths = []
    for batch in (numbers(3), numbers(2, first=13800000000)):
        for mobile in batch:
            journal.write(answered(mobile, Status.ONLINE, START), "s1", "new")
        journal._write_lines(['{"m":"13700000000","n":1,"t":1714607998123457,"b":true}'])
        segment = journal.rotate()
        paths.append(segment.path)
        segment.release()
    journal.current.release()
    for path in paths:
        fold_both(duck, pg, path)
    state = assert_same_state(duck, pg)
    charges = {row[1]: row[4:] for row in state["charges"]}
    assert charges == {
        "s1": (5, 5, 0, Decimal("2.500000")),
        None: (2, 2, 0, Decimal("1.000000")),
    }


def test_folding_a_segment_twice_is_a_no_op(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection, pg: PgConnection
) -> None:
    (path,) = write_run(tmp_path / "journal", "run-1", mixed_results(numbers(14), START))
    first = pg_record.fold_segment(pg, path, tables=TABLES)
    before = pg_state(pg)
    again = pg_record.fold_segment(pg, path, tables=TABLES)
    assert again == FoldResult(0, 0, already_folded=True)
    assert pg_state(pg) == before
    assert (first.attempts, first.answers) == (20, 12)
    record.fold_segment(duck, path, tables=TABLES)
    record.fold_segment(duck, path, tables=TABLES)
    assert_same_state(duck, pg)


def test_a_late_older_segment_does_not_overwrite_a_newer_answer(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection, pg: PgConnection
) -> None:
    """A crashed run's journal folded after a newer run: its answers only fill gaps."""
    journal = tmp_path / "journal"
    shared, only_old = "13900000001", "13900000002"
    older = write_run(
        journal,
        "run-old",
        [
            (answered(shared, Status.POWERED_OFF, START), "s1"),
            (answered(only_old, Status.VACANT, START), "s1"),
        ],
    )
    newer = write_run(
        journal, "run-new", [(answered(shared, Status.ONLINE, START + timedelta(days=1)), "s1")]
    )
    for path in [*newer, *older]:
        duck_result, pg_result = fold_both(duck, pg, path)
        assert pg_result == duck_result
    assert pg_result == FoldResult(attempts=2, answers=1, already_folded=False)
    state = assert_same_state(duck, pg)
    cache = {row[0]: (row[2], row[7]) for row in state["cache"]}
    assert cache == {shared: ("online", "run-new"), only_old: ("vacant", "run-old")}
    assert len(state["audit"]) == 3  # the audit keeps every attempt


def test_a_segment_that_repeats_a_number_caches_its_latest_answer(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection, pg: PgConnection
) -> None:
    """A run writes each number once; a segment that holds one twice (written by hand,
    say) still folds to one cache row per number, the latest, and audits both."""
    journal = tmp_path / "journal"
    twice, once = "13900000001", "13900000002"
    (path,) = write_run(
        journal,
        "run-1",
        [
            (answered(twice, Status.ONLINE, START + timedelta(hours=1)), "s1"),
            (answered(twice, Status.VACANT, START), "s1"),
            (answered(once, Status.POWERED_OFF, START), "s1"),
        ],
    )
    duck_result, pg_result = fold_both(duck, pg, path)
    assert pg_result == duck_result == FoldResult(attempts=3, answers=2, already_folded=False)
    state = assert_same_state(duck, pg)
    cache = {row[0]: row[2] for row in state["cache"]}
    assert cache == {twice: "online", once: "powered_off"}
    assert len(state["audit"]) == 3


def test_a_symlinked_segment_is_refused(tmp_path: Path, pg: PgConnection) -> None:
    (target,) = write_run(
        tmp_path / "journal", "run-1", [(answered("13900000001", Status.ONLINE, START), "s1")]
    )
    link = tmp_path / "run-1-1-000009.jsonl"
    link.symlink_to(target)
    with pytest.raises(UntrustedFileError, match="symbolic link"):
        pg_record.fold_segment(pg, link, tables=TABLES)
    assert all(rows == [] for rows in pg_state(pg).values())


def test_a_segment_duckdb_refuses_writes_nothing(tmp_path: Path, pg: PgConnection) -> None:
    """A price that is no decimal fails while DuckDB reads the segment: nothing reaches
    PostgreSQL, so the segment can be quarantined and folded later."""
    (path,) = write_run(
        tmp_path / "journal", "run-1", [(answered("13900000001", Status.ONLINE, START), "s1")]
    )
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = '{"run":"run-1","price":"free","cur":"CNY"}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(duckdb.ConversionException):
        pg_record.fold_segment(pg, path, tables=TABLES)
    assert all(rows == [] for rows in pg_state(pg).values())


def test_fold_in_session_creates_the_tables_and_folds(tmp_path: Path, postgres_url: str) -> None:
    (path,) = write_run(
        tmp_path / "journal", "run-1", [(answered("13900000001", Status.ONLINE, START), "s1")]
    )
    connect = PostgresTarget(postgres_url).connect()
    result = pg_record.fold_in_session(connect, path, tables=TABLES)
    assert result == FoldResult(attempts=1, answers=1, already_folded=False)
    again = pg_record.fold_in_session(connect, path, tables=TABLES)
    assert again.already_folded


def test_two_sessions_folding_one_segment_at_once_fold_it_once(
    tmp_path: Path, postgres_url: str, pg: PgConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pods recovering the same segment, both past the "already folded?" look-up
    before either commits: the claim of the segment's name lets one of them fold it."""
    (path,) = write_run(tmp_path / "journal", "run-1", mixed_results(numbers(14), START))
    both_looked = threading.Barrier(2)
    write_rows = pg_record._write_rows

    def write_rows_when_both_looked(
        segment: Path, attempt_rows: IO[bytes], answer_rows: IO[bytes]
    ) -> record.SegmentHeader:
        both_looked.wait(timeout=10)
        return write_rows(segment, attempt_rows, answer_rows)

    monkeypatch.setattr(pg_record, "_write_rows", write_rows_when_both_looked)
    connect = PostgresTarget(postgres_url).connect()

    def fold() -> FoldResult:
        with connect() as conn:
            return pg_record.fold_segment(conn, path, tables=TABLES)

    with ThreadPoolExecutor(2) as pool:
        results = [f.result(timeout=30) for f in [pool.submit(fold), pool.submit(fold)]]
    assert sorted(r.already_folded for r in results) == [False, True]
    assert len(pg_state(pg)["audit"]) == 20


def test_the_rows_in_transit_are_in_no_named_file(
    tmp_path: Path, pg: PgConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold killed halfway leaves no file of numbers behind: the CSV files DuckDB writes
    for COPY have no name, even while they are being read."""
    (path,) = write_run(tmp_path / "journal", "run-1", mixed_results(numbers(7), START))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen: list[list[str]] = []
    load = pg_record._load

    def listing_load(conn: PgConnection, temporary: str, rows: IO[bytes]) -> None:
        seen.append(sorted(os.listdir(scratch)))
        load(conn, temporary, rows)

    monkeypatch.setattr(pg_record, "_load", listing_load)
    assert pg_record.fold_segment(pg, path, tables=TABLES).answers == 6
    assert seen == [[], []]
    assert os.listdir(scratch) == []


def test_one_session_folds_many_segments_as_separate_sessions_do(
    tmp_path: Path, duck: duckdb.DuckDBPyConnection, postgres_url: str
) -> None:
    """A :class:`FoldSession` (the store's session for a turn's folds) gives DuckDB's rows
    for segment after segment, also when a fold in it fails: a segment PostgreSQL refuses
    (a NUL character) as the session's first fold, then one DuckDB refuses, write nothing,
    and the next folds of the same session go on."""
    journal = Journal(tmp_path / "journal", "run-s", unit_price=Decimal("0.5"), currency="CNY")
    journal._write_lines(['{"m":"1390000\\u00000001","n":1,"t":1714607998123457,"b":true}'])
    refused_by_pg = journal.rotate()
    refused_by_pg.release()
    journal.current.release()
    (refused_by_duckdb,) = write_run(
        tmp_path / "bad", "run-b", [(answered("13900000001", Status.ONLINE, START), "s1")]
    )
    lines = refused_by_duckdb.read_text(encoding="utf-8").splitlines()
    lines[0] = '{"run":"run-b","price":"free","cur":"CNY"}'
    refused_by_duckdb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    good = write_run(tmp_path / "good", "run-1", mixed_results(numbers(40), START), segments=4)

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        session = pg_record.FoldSession(conn, TABLES)
        with pytest.raises(psycopg.DataError):
            session.fold(refused_by_pg.path)
        assert all(rows == [] for rows in pg_state(conn).values())
        for index, path in enumerate(good):
            if index == 2:
                with pytest.raises(duckdb.ConversionException):
                    session.fold(refused_by_duckdb)
            assert session.fold(path) == record.fold_segment(duck, path, tables=TABLES)
        assert session.fold(good[0]).already_folded
        assert_same_state(duck, conn)
