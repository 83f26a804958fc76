"""Recording answers: folding journal segments into the audit and the cache.

A journal segment is a JSON-lines file written as answers arrive (see
:mod:`mobile_status_dagster.core.engine.journal`). Folding reads it with DuckDB's JSON
reader — vectorized, no per-row Python — and, in one transaction, appends its attempts
to ``provider_calls`` (and their charges to ``mobile_status_charges``), replaces the
cache rows of its answers, and records the segment name, so a segment folded twice
(after a crash between commit and delete) is a no-op.

The pieces that read a segment (:func:`check_segment`, :func:`segment_lines`,
:func:`attempt_rows_sql`, :func:`answer_rows_sql`) are shared with the PostgreSQL store
(:mod:`mobile_status_dagster.core.store.postgres.record`), which folds the same rows.

DuckDB's readers take a path as a glob pattern; the segment and the spool are passed as
:func:`~mobile_status_dagster.core.files.literal_path`, so a run id or a database
directory with ``*``, ``?`` or ``[`` reads exactly its own file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from mobile_status_dagster.core.errors import ConfigurationError, UntrustedFileError
from mobile_status_dagster.core.files import file_problem, literal_path
from mobile_status_dagster.core.store.connection import transaction
from mobile_status_dagster.core.store.schema import (
    MONEY,
    Tables,
    charges_rows_sql,
    status_label_sql,
)

#: The journal format. A segment starts with a header line (``run``, ``price``, ``cur``);
#: every other line is one provider attempt. Keys are short and absent values omitted,
#: because DuckDB's JSON reader takes time in proportion to the bytes it parses.
JOURNAL_KEYS: dict[str, str] = {
    "run": "VARCHAR",  # header: run id
    "price": "VARCHAR",  # header: unit price, exact decimal text
    "cur": "VARCHAR",  # header: currency
    "m": "VARCHAR",  # mobile
    "s": "VARCHAR",  # set id (partition key) the call is charged to
    "why": "VARCHAR",  # reason: new, stale, retry, forced
    "n": "SMALLINT",  # attempt number, from 1
    "t": "BIGINT",  # requested at, microseconds since the epoch (UTC)
    "ms": "DOUBLE",  # latency
    "h": "SMALLINT",  # HTTP status
    "c": "INTEGER",  # provider code
    "msg": "VARCHAR",  # provider message or error text
    "o": "VARCHAR",  # order number
    "st": "TINYINT",  # status code of the answer
    "op": "VARCHAR",  # serving operator
    "b": "BOOLEAN",  # billed
    "pb": "BOOLEAN",  # possibly billed
    "e": "VARCHAR",  # error class
    "keep": "BOOLEAN",  # this attempt settles the number: the cache keeps its outcome
    "keep_st": "TINYINT",  # status to keep when it differs from st (5001 -> unknown)
}

_LINES = "mobile_status_journal_lines"
_CHARGES_DELTA = "mobile_status_charges_delta"
_NEW_ANSWERS = "mobile_status_new_answers"
_TIME = "to_timestamp(t / 1000000)"


@dataclass(frozen=True)
class FoldResult:
    """What one fold added (zero for a segment folded before)."""

    attempts: int
    answers: int
    already_folded: bool


def fold_segment(conn: duckdb.DuckDBPyConnection, path: Path, *, tables: Tables) -> FoldResult:
    """Fold one journal segment into the audit and the cache of ``tables``, exactly once.

    Raises:
        UntrustedFileError: ``path`` is missing, or is not a regular file of the current
            user that only the user may write (a symlink, a file of another owner): it
            is not folded.
    """
    check_segment(path)
    name = path.name
    if conn.execute(f"SELECT 1 FROM {tables.segments} WHERE segment = ?", [name]).fetchone():
        return FoldResult(0, 0, already_folded=True)
    with segment_lines(conn, path) as header, transaction(conn):
        attempts = _append_attempts(conn, tables, header)
        answers = _replace_answers(conn, tables, header)
        conn.execute(
            f"INSERT INTO {tables.segments} VALUES (?, ?, ?, ?, now())",
            [name, header.run_id, attempts, answers],
        )
    return FoldResult(attempts, answers, already_folded=False)


def check_segment(path: Path) -> None:
    """Refuse a segment that is not a regular file of the current user only they may write.

    Raises:
        UntrustedFileError: ``path`` is missing, a symlink, not a regular file, of
            another owner, or writable by group or others.
    """
    try:
        problem = file_problem(os.lstat(path))
    except OSError as error:
        problem = f"it cannot be read ({error.strerror})"
    if problem is not None:
        raise UntrustedFileError(f"refusing to fold journal segment {path}: {problem}")


@dataclass(frozen=True)
class SegmentHeader:
    """A segment's first line: the run, its unit price (exact decimal text), its currency."""

    run_id: str | None
    price: str | None
    currency: str | None
    repeats: bool = True
    """Whether some number has more than one kept line (a run writes one per number)."""

    @property
    def attempt_params(self) -> dict[str, str]:
        """The parameters of :func:`attempt_rows_sql`."""
        return {
            "price": self.price or "0",
            "currency": self.currency or "",
            "run_id": self.run_id or "",
        }

    @property
    def answer_params(self) -> dict[str, str | None]:
        """The parameters of :func:`answer_rows_sql`."""
        return {"run_id": self.run_id}


@contextlib.contextmanager
def segment_lines(conn: duckdb.DuckDBPyConnection, path: Path) -> Iterator[SegmentHeader]:
    """The lines of segment ``path`` as a temporary table of ``conn`` while the block runs
    (read by :func:`attempt_rows_sql` and :func:`answer_rows_sql`); yields its header."""
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in JOURNAL_KEYS.items()) + "}"
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {_LINES} AS SELECT * FROM read_json(?, "
        f"format = 'newline_delimited', columns = {columns}, ignore_errors = true)",
        [_literal(path)],
    )
    try:
        header = conn.execute(
            f"SELECT any_value(run), any_value(price), any_value(cur) FROM {_LINES} "
            "WHERE run IS NOT NULL"
        ).fetchone()
        run_id, price, currency = header if header else (None, None, None)
        (repeats,) = conn.execute(
            f"SELECT EXISTS (SELECT m FROM {_LINES} WHERE keep GROUP BY m HAVING count(*) > 1)"
        ).fetchone() or (True,)
        yield SegmentHeader(run_id, price, currency, bool(repeats))
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {_LINES}")


def attempt_rows_sql() -> str:
    """``SELECT`` of the audit rows (``provider_calls``'s columns, in order) of the lines
    of :func:`segment_lines`, one per attempt; parameters :attr:`SegmentHeader.attempt_params`."""
    return f"""
        SELECT o AS order_number, m AS mobile, c AS provider_code, msg AS provider_message,
               st AS status_code, op AS operator, coalesce(b, false) AS billed,
               coalesce(pb, false) AS possibly_billed, CAST($price AS {MONEY}) AS unit_price,
               $currency AS currency, s AS set_id, $run_id AS run_id, {_TIME} AS requested_at,
               ms AS latency_ms, n AS attempt, h AS http_status, e AS error, why AS reason
        FROM {_LINES} WHERE m IS NOT NULL
    """


def answer_rows_sql(header: SegmentHeader) -> str:
    """``SELECT`` of the cache rows (``mobile_status_latest``'s columns, in order) of the
    lines of :func:`segment_lines`: each settled number's latest outcome, one row per
    number; parameters :attr:`SegmentHeader.answer_params`.

    The window that keeps a number's latest kept line runs only when the segment
    repeats a number (it is a sort, and a run's segment holds each number once).
    """
    latest = (
        "QUALIFY row_number() OVER (PARTITION BY m ORDER BY t DESC) = 1" if header.repeats else ""
    )
    return f"""
        SELECT m AS mobile, coalesce(keep_st, st) AS status_code,
               {status_label_sql("coalesce(keep_st, st)")} AS status, op AS operator,
               o AS order_number, c AS provider_code, {_TIME} AS checked_at,
               CAST($run_id AS VARCHAR) AS run_id
        FROM {_LINES} WHERE keep
        {latest}
    """


def _append_attempts(conn: duckdb.DuckDBPyConnection, tables: Tables, header: SegmentHeader) -> int:
    """Append the segment's attempts to the audit, and add them to the charges."""
    params = header.attempt_params
    attempts = attempt_rows_sql()
    row = conn.execute(f"INSERT INTO {tables.audit} {attempts}", params).fetchone()
    _add_charges(conn, tables, charges_rows_sql(f"({attempts})"), params)
    return _count(row)


_CHARGES_KEY = (
    "c.day = d.day AND c.set_id IS NOT DISTINCT FROM d.set_id "
    "AND c.run_id = d.run_id AND c.currency = d.currency"
)


def _add_charges(
    conn: duckdb.DuckDBPyConnection, tables: Tables, delta_sql: str, params: dict[str, str]
) -> None:
    """Add the charges of one segment's attempts to the charges table, row by row.

    The charges table is small (a row per day × set × run × currency), so this costs
    what the segment costs, not what the audit holds.
    """
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {_CHARGES_DELTA} AS {delta_sql}", params)
    conn.execute(
        f"""
        UPDATE {tables.charges} c
        SET calls = c.calls + d.calls, billed_calls = c.billed_calls + d.billed_calls,
            possibly_billed_calls = c.possibly_billed_calls + d.possibly_billed_calls,
            cost = c.cost + d.cost
        FROM {_CHARGES_DELTA} d WHERE {_CHARGES_KEY}
        """
    )
    conn.execute(
        f"INSERT INTO {tables.charges} SELECT * FROM {_CHARGES_DELTA} d "
        f"WHERE NOT EXISTS (SELECT 1 FROM {tables.charges} c WHERE {_CHARGES_KEY})"
    )
    conn.execute(f"DROP TABLE {_CHARGES_DELTA}")


def _replace_answers(conn: duckdb.DuckDBPyConnection, tables: Tables, header: SegmentHeader) -> int:
    """Replace the cache rows of the segment's answers; the number of answers cached.

    A late fold (a crashed run's journal) must not overwrite a newer answer. Normally no
    cache row is newer than the segment's oldest answer (one cheap query: row-group
    statistics skip the older rows), and the answers go straight from the lines into
    the cache; otherwise they go through a temporary table that drops the outdated ones.
    """
    new_rows, params = answer_rows_sql(header), dict(header.answer_params)
    numbers = f"SELECT m FROM {_LINES} WHERE keep"
    if _cache_has_answers_after_the_segment(conn, tables):
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {_NEW_ANSWERS} AS {new_rows}", params)
        conn.execute(
            f"""
            DELETE FROM {_NEW_ANSWERS} n WHERE EXISTS (
                SELECT 1 FROM {tables.cache} c
                WHERE c.mobile = n.mobile AND c.checked_at > n.checked_at)
            """
        )
        new_rows, params = f"SELECT * FROM {_NEW_ANSWERS}", {}
        numbers = f"SELECT mobile FROM {_NEW_ANSWERS}"
    conn.execute(f"DELETE FROM {tables.cache} WHERE mobile IN ({numbers})")
    cached = _count(conn.execute(f"INSERT INTO {tables.cache} {new_rows}", params).fetchone())
    conn.execute(f"DROP TABLE IF EXISTS {_NEW_ANSWERS}")
    return cached


def _cache_has_answers_after_the_segment(conn: duckdb.DuckDBPyConnection, tables: Tables) -> bool:
    """Whether a cache row is newer than the oldest answer of :func:`segment_lines`."""
    row = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {tables.cache} WHERE checked_at > "
        f"(SELECT min({_TIME}) FROM {_LINES} WHERE keep))"
    ).fetchone()
    return bool(row and row[0])


def _count(row: tuple[Any, ...] | None) -> int:
    """The row count an ``INSERT`` returns."""
    return int(row[0]) if row else 0


def iter_spool(path: Path, batch_size: int = 2048) -> Iterator[tuple[str, str, str]]:
    """Stream ``(mobile, set_id, reason)`` from a plan's spool file, a batch at a time.

    Reads through a private in-memory DuckDB, so the database file stays unlocked.
    """
    with duckdb.connect() as conn:
        cursor = conn.execute(
            "SELECT mobile, set_id, reason FROM read_parquet(?)", [_literal(path)]
        )
        while rows := cursor.fetchmany(batch_size):
            for mobile, set_id, reason in rows:
                yield str(mobile), str(set_id), str(reason)


def _literal(path: Path) -> str:
    try:
        return literal_path(path)
    except ValueError as error:
        raise ConfigurationError("path", str(error)) from None
