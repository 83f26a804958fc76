"""Loading number files (CSV, plain text, Parquet) into the source table ``number_sets``.

A path names one file, literally: DuckDB's readers would expand ``*``, ``?`` and
``[...]`` in it (``load 'a*.csv'`` loaded ``a1.csv`` too), so the path must name one
existing regular file, and it is handed to DuckDB as
:func:`~mobile_status_dagster.core.files.literal_path`, which matches only itself.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from mobile_status_dagster.core.errors import LoadError
from mobile_status_dagster.core.files import has_glob, literal_path
from mobile_status_dagster.core.store.connection import transaction
from mobile_status_dagster.core.store.number_sql import (
    normalized_numbers_sql,
    quote_identifier,
    register_number_rules,
)
from mobile_status_dagster.core.store.schema import DEFAULT_SOURCE, SOURCE_DDL

CSV_SUFFIXES = frozenset({".csv"})
TEXT_SUFFIXES = frozenset({".txt"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
DEFAULT_COLUMN = "mobile"
_STAGED = "mobile_status_staged_load"


@dataclass(frozen=True)
class LoadResult:
    """Rows loaded into a set, and how many of them our rules reject (with reasons)."""

    set_id: str
    rows: int
    valid: int
    rejected: dict[str, int] = field(default_factory=dict)


def load_file(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    set_id: str,
    column: str | None = None,
    replace: bool = False,
) -> LoadResult:
    """Append the numbers in ``path`` to set ``set_id`` (or replace the set), in one transaction.

    Rejected numbers are loaded too, so the published table shows each with its
    reason; the result counts them.
    """
    if not set_id.strip():
        raise LoadError("the set id is empty")
    _stage(conn, path, column)
    try:
        (rows,) = conn.execute(f"SELECT count(*) FROM {_STAGED}").fetchone() or (0,)
        if rows == 0:
            raise LoadError(f"{path}: no rows to load")
        conn.execute(SOURCE_DDL)
        with transaction(conn):
            if replace:
                conn.execute(f"DELETE FROM {DEFAULT_SOURCE} WHERE set_id = ?", [set_id])
            conn.execute(
                f"INSERT INTO {DEFAULT_SOURCE} (set_id, mobile) SELECT ?, mobile FROM {_STAGED}",
                [set_id],
            )
        register_number_rules(conn)
        normalized = normalized_numbers_sql(
            f"(SELECT mobile AS mobile_raw FROM {_STAGED})", "mobile_raw"
        )
        reasons = conn.execute(
            f"SELECT coalesce(invalid_reason, 'valid'), count(*) FROM ({normalized}) GROUP BY ALL"
        ).fetchall()
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {_STAGED}")
    counts = {str(reason): int(n) for reason, n in reasons}
    valid = counts.pop("valid", 0)
    return LoadResult(
        set_id=set_id, rows=int(rows), valid=valid, rejected=dict(sorted(counts.items()))
    )


def _stage(conn: duckdb.DuckDBPyConnection, path: Path, column: str | None) -> None:
    """Read ``path`` into a TEMP table with one VARCHAR column ``mobile``."""
    _check_one_file(path)
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        relation = (
            "SELECT trim(line, chr(13)) AS mobile FROM "
            "(SELECT unnest(string_split(content, chr(10))) AS line FROM read_text(?)) "
            "WHERE trim(line, chr(13)) <> ''"
        )
        _create_staged(conn, path, relation, "plain text")
        return
    if suffix in CSV_SUFFIXES:
        reader, kind = "read_csv(?, header = true, all_varchar = true)", "CSV"
    elif suffix in PARQUET_SUFFIXES:
        reader, kind = "read_parquet(?)", "Parquet"
    else:
        raise LoadError(
            f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .txt or .parquet"
        )
    try:
        columns = [
            row[0]
            for row in conn.execute(f"DESCRIBE SELECT * FROM {reader}", [_literal(path)]).fetchall()
        ]
    except duckdb.Error as error:
        raise _unreadable(path, kind, error) from None
    chosen = _choose_column(path, columns, column)
    relation = f"SELECT CAST({quote_identifier(chosen)} AS VARCHAR) AS mobile FROM {reader}"
    _create_staged(conn, path, relation, kind)


def _create_staged(conn: duckdb.DuckDBPyConnection, path: Path, relation: str, kind: str) -> None:
    try:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {_STAGED} AS {relation}", [_literal(path)])
    except duckdb.Error as error:
        raise _unreadable(path, kind, error) from None


def _check_one_file(path: Path) -> None:
    """``path`` must name one existing, non-empty regular file (a symlink to one is fine)."""
    literally = " (the name is taken literally, not as a glob pattern)" if has_glob(path) else ""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file{literally}") from None
    except OSError as error:
        raise LoadError(f"{path}: cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise LoadError(f"{path}: not a regular file; give the path of one file{literally}")
    if info.st_size == 0:
        raise LoadError(f"{path}: the file is empty")
    _literal(path)


def _literal(path: Path) -> str:
    try:
        return literal_path(path)
    except ValueError as error:
        raise LoadError(str(error)) from None


def _unreadable(path: Path, kind: str, error: duckdb.Error) -> LoadError:
    text = str(error).lower()
    hint = " — save it as UTF-8" if "unicode" in text or "utf" in text else ""
    return LoadError(f"{path}: not a readable {kind} file ({_first_line(error)}){hint}")


def _choose_column(path: Path, columns: list[str], column: str | None) -> str:
    if column is not None:
        if column not in columns:
            raise LoadError(f"{path}: no column {column!r} (columns: {', '.join(columns)})")
        return column
    for name in columns:
        if name.strip().lower() == DEFAULT_COLUMN:
            return name
    if not columns:
        raise LoadError(f"{path}: the file has no columns")
    return columns[0]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
