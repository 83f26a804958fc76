"""Recording answers: folding journal segments into the audit and the cache.

A journal segment is a JSON-lines file written as answers arrive (see
:mod:`mobile_status_dagster.engine.journal`). Folding reads it with DuckDB's JSON
reader — vectorized, no per-row Python — and, in one transaction, appends its attempts
to ``provider_calls``, replaces the cache rows of its answers, and records the segment
name, so a segment folded twice (after a crash between commit and delete) is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from mobile_status_dagster.store.connection import transaction
from mobile_status_dagster.store.schema import AUDIT, CACHE, MONEY, SEGMENTS, status_label_sql

#: Journal line fields and their DuckDB types. ``kind`` is ``attempt`` or ``answer``.
JOURNAL_COLUMNS: dict[str, str] = {
    "kind": "VARCHAR",
    "run_id": "VARCHAR",
    "set_id": "VARCHAR",
    "mobile": "VARCHAR",
    "attempt": "SMALLINT",
    "requested_at": "TIMESTAMPTZ",
    "latency_ms": "DOUBLE",
    "http_status": "SMALLINT",
    "code": "INTEGER",
    "message": "VARCHAR",
    "order_number": "VARCHAR",
    "status_code": "TINYINT",
    "operator": "VARCHAR",
    "billed": "BOOLEAN",
    "possibly_billed": "BOOLEAN",
    "error": "VARCHAR",
    "unit_price": "VARCHAR",
    "currency": "VARCHAR",
    "reason": "VARCHAR",
}

_LINES = "mobile_status_journal_lines"


@dataclass(frozen=True)
class FoldResult:
    """What one fold added (zero for a segment folded before)."""

    attempts: int
    answers: int
    already_folded: bool


def fold_segment(conn: duckdb.DuckDBPyConnection, path: Path) -> FoldResult:
    """Fold one journal segment into the audit and the cache, exactly once."""
    name = path.name
    if conn.execute(f"SELECT 1 FROM {SEGMENTS} WHERE segment = ?", [name]).fetchone():
        return FoldResult(0, 0, already_folded=True)
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in JOURNAL_COLUMNS.items()) + "}"
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {_LINES} AS SELECT * FROM read_json(?, "
        f"format = 'newline_delimited', columns = {columns}, ignore_errors = true)",
        [str(path)],
    )
    try:
        with transaction(conn):
            attempts = _append_attempts(conn)
            answers = _replace_answers(conn)
            conn.execute(
                f"INSERT INTO {SEGMENTS} SELECT ?, any_value(run_id), ?, ?, now() FROM {_LINES}",
                [name, attempts, answers],
            )
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {_LINES}")
    return FoldResult(attempts, answers, already_folded=False)


def _append_attempts(conn: duckdb.DuckDBPyConnection) -> int:
    row = conn.execute(
        f"""
        INSERT INTO {AUDIT}
        SELECT order_number, mobile, code, message, status_code, operator,
               coalesce(billed, false), coalesce(possibly_billed, false),
               CAST(unit_price AS {MONEY}), currency, set_id, run_id, requested_at, latency_ms,
               attempt, http_status, error, reason
        FROM {_LINES} WHERE kind = 'attempt'
        """
    ).fetchone()
    return int(row[0]) if row else 0


def _replace_answers(conn: duckdb.DuckDBPyConnection) -> int:
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE mobile_status_new_answers AS
        SELECT mobile, status_code, {status_label_sql("status_code")} AS status, operator,
               order_number, code AS provider_code, requested_at AS checked_at, run_id
        FROM {_LINES} WHERE kind = 'answer'
        QUALIFY row_number() OVER (PARTITION BY mobile ORDER BY requested_at DESC) = 1
        """
    )
    # A late fold (a crashed run's journal) must not overwrite a newer answer.
    conn.execute(
        f"""
        DELETE FROM mobile_status_new_answers n WHERE EXISTS (
            SELECT 1 FROM {CACHE} c WHERE c.mobile = n.mobile AND c.checked_at > n.checked_at)
        """
    )
    conn.execute(
        f"DELETE FROM {CACHE} WHERE mobile IN (SELECT mobile FROM mobile_status_new_answers)"
    )
    row = conn.execute(f"INSERT INTO {CACHE} SELECT * FROM mobile_status_new_answers").fetchone()
    conn.execute("DROP TABLE mobile_status_new_answers")
    return int(row[0]) if row else 0


def iter_spool(path: Path, batch_size: int = 2048) -> Iterator[tuple[str, str, str]]:
    """Stream ``(mobile, set_id, reason)`` from a plan's spool file, a batch at a time.

    Reads through a private in-memory DuckDB, so the database file stays unlocked.
    """
    with duckdb.connect() as conn:
        cursor = conn.execute("SELECT mobile, set_id, reason FROM read_parquet(?)", [str(path)])
        while rows := cursor.fetchmany(batch_size):
            for mobile, set_id, reason in rows:
                yield str(mobile), str(set_id), str(reason)
