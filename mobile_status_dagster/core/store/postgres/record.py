"""Recording answers in PostgreSQL: folding journal segments into the audit and the cache.

The twin of :mod:`mobile_status_dagster.core.store.record` (DuckDB), with the same
result. The segment is read by a private in-memory DuckDB (one per process, a connection
of its own per fold), with the same JSON reader and the same ``SELECT``\\ s of attempt
and answer rows. DuckDB's CSV writer writes those rows into anonymous temporary files
(``tempfile.TemporaryFile``: private, and without a name, so a process killed mid-fold
leaves nothing behind), read back by ``COPY … FROM STDIN`` into temporary tables — no
Python loop over rows. Then, in one PostgreSQL transaction:

* the segment's name is claimed in ``journal_segments`` (a second fold, also one running
  at the same time in another session, finds it and does nothing);
* every attempt is appended to the audit, and the charges are added to
  ``mobile_status_charges`` (``INSERT … ON CONFLICT … DO UPDATE``, on the key
  ``(day, set_id, run_id, currency)``, ``NULLS NOT DISTINCT``);
* each settled number's latest outcome is upserted into the cache, unless the cache
  holds a newer one (a late fold of an old segment never overwrites a newer answer).

Money stays exact: prices travel as decimal text into ``NUMERIC(18, 6)``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import IO

import duckdb
import psycopg

from mobile_status_dagster.core.store.postgres.connection import PgConnect
from mobile_status_dagster.core.store.postgres.schema import ensure_schema
from mobile_status_dagster.core.store.record import (
    FoldResult,
    SegmentHeader,
    answer_rows_sql,
    attempt_rows_sql,
    check_segment,
    segment_lines,
)
from mobile_status_dagster.core.store.schema import Tables, charges_rows_sql

PgConnection = psycopg.Connection[tuple[object, ...]]

_ATTEMPTS = "mobile_status_fold_attempts"
_ANSWERS = "mobile_status_fold_answers"
_COPY_CHUNK = 1 << 20
_OPEN_FILES = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"

_parser_lock = threading.Lock()
_parser_database: tuple[int, duckdb.DuckDBPyConnection] | None = None
_abandoned: list[duckdb.DuckDBPyConnection] = []

_CHARGES_KEY = "(day, set_id, run_id, currency)"
_CHARGES_SUMS = ("calls", "billed_calls", "possibly_billed_calls", "cost")
_CACHE_VALUES = (
    "status_code",
    "status",
    "operator",
    "order_number",
    "provider_code",
    "checked_at",
    "run_id",
)


def fold_segment(
    conn: psycopg.Connection[tuple[object, ...]], path: Path, *, tables: Tables
) -> FoldResult:
    """Fold one journal segment into the audit and the cache of ``tables``, exactly once.

    ``conn`` is a session in autocommit mode (:meth:`PostgresTarget.open`); the fold is
    one transaction of it. Its temporary tables are dropped at commit: a session that
    folds again and again uses a :class:`FoldSession`.

    Raises:
        UntrustedFileError: ``path`` is missing, or is not a regular file of the current
            user that only the user may write (a symlink, a file of another owner): it
            is not folded.
        duckdb.Error: DuckDB refused the segment's data (a price that is no decimal);
            nothing is written.
        psycopg.Error: PostgreSQL refused the rows, or the session failed; nothing is
            written.
    """
    return _fold(conn, path, tables=tables, on_commit="DROP")[0]


class FoldSession:
    """One session for the many folds of a run (one every 100 ms): it is opened, logged
    in and its tables checked once, and its temporary tables are created once (emptied
    at each commit), instead of at every fold. Not for concurrent use."""

    def __init__(self, conn: PgConnection, tables: Tables) -> None:
        ensure_schema(conn, tables)
        self.conn = conn
        self.tables = tables
        self._temporary_made = False

    def fold(self, path: Path) -> FoldResult:
        """:func:`fold_segment` in this session (same result, same errors)."""
        on_commit = None if self._temporary_made else "DELETE ROWS"
        result, created = _fold(self.conn, path, tables=self.tables, on_commit=on_commit)
        self._temporary_made |= created  # committed: the tables stay for the next folds
        return result


def _fold(
    conn: PgConnection, path: Path, *, tables: Tables, on_commit: str | None
) -> tuple[FoldResult, bool]:
    """The fold, creating its temporary tables ``ON COMMIT {on_commit}`` (``None``: they
    exist); also whether it created them."""
    check_segment(path)
    name = path.name
    if conn.execute(f"SELECT 1 FROM {tables.segments} WHERE segment = %s", [name]).fetchone():
        return FoldResult(0, 0, already_folded=True), False
    with tempfile.TemporaryFile() as attempt_rows, tempfile.TemporaryFile() as answer_rows:
        header = _write_rows(path, attempt_rows, answer_rows)
        with conn.transaction():
            claimed = conn.execute(
                f"INSERT INTO {tables.segments} VALUES (%s, %s, 0, 0, now()) "
                "ON CONFLICT (segment) DO NOTHING",
                [name, header.run_id],
            )
            if claimed.rowcount == 0:  # folded meanwhile by another session
                return FoldResult(0, 0, already_folded=True), False
            if on_commit is not None:
                for temporary, like in ((_ATTEMPTS, tables.audit), (_ANSWERS, tables.cache)):
                    conn.execute(
                        f"CREATE TEMP TABLE {temporary} (LIKE {like}) ON COMMIT {on_commit}"
                    )
            _load(conn, _ATTEMPTS, attempt_rows)
            _load(conn, _ANSWERS, answer_rows)
            attempts = _append_attempts(conn, tables)
            answers = _upsert_answers(conn, tables)
            conn.execute(
                f"UPDATE {tables.segments} SET attempts = %s, answers = %s WHERE segment = %s",
                [attempts, answers, name],
            )
    return FoldResult(attempts, answers, already_folded=False), on_commit is not None


def fold_in_session(connect: PgConnect, path: Path, *, tables: Tables) -> FoldResult:
    """Fold ``path`` in a session of ``connect`` of its own, creating ``tables`` first if
    they are missing (a leftover segment may be folded before a run plans)."""
    with connect() as conn:
        return FoldSession(conn, tables).fold(path)


def _write_rows(segment: Path, attempt_rows: IO[bytes], answer_rows: IO[bytes]) -> SegmentHeader:
    """Write the segment's audit rows and cache rows as CSV into the two open files
    (DuckDB's writer: NULL unquoted and empty, an empty string quoted, timestamps with
    their offset, a double's shortest round trip, a decimal's exact digits)."""
    with _parser() as duck:
        duck.execute("SET TimeZone = 'UTC'")  # timestamps as text end in +00
        with segment_lines(duck, segment) as header:
            for select, params, rows in (
                (attempt_rows_sql(), header.attempt_params, attempt_rows),
                (answer_rows_sql(header), header.answer_params, answer_rows),
            ):
                target = f"'{_OPEN_FILES}/{rows.fileno()}'"  # the open file: it has no name
                duck.execute(
                    f"COPY ({select}) TO {target} (FORMAT csv, HEADER false, USE_TMP_FILE false)",
                    params,
                )
    return header


def _parser() -> duckdb.DuckDBPyConnection:
    """A new connection to this process's in-memory DuckDB, made at the first fold.

    Opening an in-memory database takes 15-45 ms, a connection to it under 1 ms, and the
    store folds several times a second. Each fold has a connection of its own, so
    its temporary tables are its own. A forked child makes its own database; the
    parent's, whose threads the child lacks, is kept, never closed there.
    """
    global _parser_database
    with _parser_lock:
        if _parser_database is None or _parser_database[0] != os.getpid():
            if _parser_database is not None:
                _abandoned.append(_parser_database[1])
            # One thread: a segment holds ~100 answers, and DuckDB's worker threads would
            # only take CPU from the run's own event loop (14 -> 12 ms of CPU per fold).
            _parser_database = (os.getpid(), duckdb.connect(config={"threads": 1}))
        return _parser_database[1].cursor()


def _load(conn: PgConnection, temporary: str, rows: IO[bytes]) -> None:
    """The CSV file ``rows`` into the (empty) temporary table ``temporary``."""
    rows.seek(0)
    with (
        conn.cursor() as cursor,
        cursor.copy(f"COPY {temporary} FROM STDIN (FORMAT csv, ENCODING 'UTF8')") as copy,
    ):
        while chunk := rows.read(_COPY_CHUNK):
            copy.write(chunk)


def _append_attempts(conn: PgConnection, tables: Tables) -> int:
    """Append the attempts to the audit, and add their charges to the charges table."""
    appended = conn.execute(f"INSERT INTO {tables.audit} SELECT * FROM {_ATTEMPTS}").rowcount
    sums = ", ".join(f"{column} = c.{column} + excluded.{column}" for column in _CHARGES_SUMS)
    conn.execute(
        f"INSERT INTO {tables.charges} AS c {charges_rows_sql(_ATTEMPTS)} "
        f"ON CONFLICT {_CHARGES_KEY} DO UPDATE SET {sums}"
    )
    return appended


def _upsert_answers(conn: PgConnection, tables: Tables) -> int:
    """Each number's answer into the cache, unless the cache holds a newer one (a late
    fold, a crashed run's journal, must not overwrite it)."""
    values = ", ".join(f"{column} = excluded.{column}" for column in _CACHE_VALUES)
    return conn.execute(
        f"INSERT INTO {tables.cache} AS c SELECT * FROM {_ANSWERS} "
        f"ON CONFLICT (mobile) DO UPDATE SET {values} WHERE c.checked_at <= excluded.checked_at"
    ).rowcount
