"""A run's rows in PostgreSQL: read from the source table, normalized by DuckDB, loaded
into a TEMP table.

The number rules have one home, :mod:`~mobile_status_dagster.core.store.number_sql`
(vectorized DuckDB SQL), so PostgreSQL does not get a second copy of them. The rows of
the partitions leave PostgreSQL by ``COPY … TO STDOUT`` (CSV) into a private file, which
an in-memory DuckDB normalizes (:func:`normalize_rows`). Planning keeps them there
(:mod:`~mobile_status_dagster.core.store.postgres.plan`); publishing and the checks load
them with ``COPY … FROM STDIN`` into the TEMP table :data:`PG_RUN_ROWS` — the columns of
the DuckDB store's ``RUN_ROWS`` — and join it with the cache in SQL. Python touches the
bytes of the copies only, never a number.

The files hold phone numbers: they live in a new directory only the user may enter
(``0700``), are created ``0600``, and are removed with their directory when the work ends,
also when it fails. DuckDB's spill files go there too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from mobile_status_dagster.core import files
from mobile_status_dagster.core.store.connection import DEFAULT_DUCKDB_CONFIG, copy_target
from mobile_status_dagster.core.store.number_sql import (
    normalized_numbers_sql,
    register_number_rules,
    sql_literal,
)
from mobile_status_dagster.core.store.plan import RUN_ROWS
from mobile_status_dagster.core.store.source import Partition, SourceTable, source_rows_sql

PgConnection = psycopg.Connection[Any]
"""A session (``PgConnect`` sessions are ``Connection[tuple[object, ...]]``: rows read
here are converted where they are used)."""

PG_RUN_ROWS = f"pg_temp.{RUN_ROWS}"
"""The TEMP table of a run's normalized rows, named in the session's own temporary schema
(a permanent table of the same name is never read, replaced or dropped)."""

#: ``set_id`` compares by code point (``COLLATE "C"``), as DuckDB's strings do, so the
#: first partition of a number (``min(set_id)``) is the same whatever the database's
#: collation (``en_US.UTF-8`` would put ``set-a`` before ``Set-b``, DuckDB after).
_RUN_ROWS_COLUMNS = (
    ("set_id", 'VARCHAR COLLATE "C"'),
    ("mobile_raw", "VARCHAR"),
    ("mobile", "VARCHAR"),
    ("valid", "BOOLEAN NOT NULL"),
    ("invalid_reason", "VARCHAR"),
    ("prefix_operator", "VARCHAR"),
    ("network_operator", "VARCHAR"),
)
_CHUNK = 1 << 20
_CSV = "FORMAT csv"
"""PostgreSQL's CSV: ``NULL`` unquoted empty, an empty string ``""``; DuckDB reads and
writes the same (its reader told that a quoted empty field is not ``NULL``)."""


class Scratch:
    """A private directory for one unit of work, and an in-memory DuckDB using it.

    Use as a context manager: on exit the connection is closed and the directory, with
    every file in it, removed.
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.directory = Path(".")
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._files = 0

    def __enter__(self) -> Scratch:
        # mkdtemp creates the directory 0700 whatever the umask.
        self.directory = Path(tempfile.mkdtemp(prefix="mobile_status_pg_")).absolute()
        self._stack.callback(shutil.rmtree, self.directory, ignore_errors=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def duck(self) -> duckdb.DuckDBPyConnection:
        """The in-memory DuckDB (opened on first use), spilling into :attr:`directory`."""
        if self._duck is None:
            config = {**DEFAULT_DUCKDB_CONFIG, "temp_directory": str(self.directory / "spill")}
            self._duck = duckdb.connect(":memory:", config=config)
            self._stack.callback(self._duck.close)
            register_number_rules(self._duck)
        return self._duck

    def new_file(self, name: str) -> Path:
        """A new empty file in :attr:`directory`, created ``0600`` (never an existing one)."""
        self._files += 1
        path = self.directory / f"{self._files}-{name}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, files.FILE_MODE)
        try:
            os.fchmod(fd, files.FILE_MODE)  # exactly, whatever the umask took away
        finally:
            os.close(fd)
        return path

    def read_csv_sql(self, path: Path, columns: Sequence[str]) -> str:
        """A DuckDB relation reading the PostgreSQL CSV ``path`` of VARCHAR ``columns``."""
        types = ", ".join(f"{sql_literal(c)}: 'VARCHAR'" for c in columns)
        return (
            f"read_csv({sql_literal(files.literal_path(path))}, columns = {{{types}}}, "
            "header = false, auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
            "allow_quoted_nulls = false)"
        )


def copy_out(conn: PgConnection, select_sql: str, params: dict[str, Any], target: Path) -> None:
    """Write the rows of ``select_sql`` (psycopg parameters ``params``, bound client-side:
    ``COPY`` takes no server-side parameter) to ``target`` as CSV."""
    with (
        open(target, "wb") as out,
        conn.cursor() as cursor,
        cursor.copy(f"COPY ({select_sql}) TO STDOUT ({_CSV})", params or None) as copy,
    ):
        for data in copy:
            out.write(data)


def copy_in(conn: PgConnection, table: str, source: Path) -> None:
    """Append the CSV rows of ``source`` to ``table``."""
    with (
        open(source, "rb") as data,
        conn.cursor() as cursor,
        cursor.copy(f"COPY {table} FROM STDIN ({_CSV})") as copy,
    ):
        while chunk := data.read(_CHUNK):
            copy.write(chunk)


def _utf8(conn: PgConnection) -> None:
    """The session exchanges UTF-8, the encoding DuckDB reads and writes."""
    if conn.info.encoding != "utf-8":
        conn.execute("SET client_encoding TO 'UTF8'")


ROWS = "<normalized rows>"
"""The marker :func:`normalize_rows` replaces in its statement with the rows' ``SELECT``."""


def normalize_rows(
    conn: PgConnection,
    source: SourceTable,
    partitions: Sequence[Partition],
    scratch: Scratch,
    statement: str,
) -> None:
    """Run ``statement`` in ``scratch``'s DuckDB with :data:`ROWS` replaced by a ``SELECT``
    of the normalized source rows of ``partitions`` (the columns and values of the DuckDB
    store's ``RUN_ROWS``), e.g. ``f"CREATE TEMP TABLE t AS {ROWS}"``.

    The rows are copied out of PostgreSQL into a file of ``scratch`` first, removed once
    ``statement`` has read it.
    """
    _utf8(conn)
    names = ", ".join(name for name, _ in _RUN_ROWS_COLUMNS)
    if not partitions:
        columns = ", ".join(
            f"CAST(NULL AS {'BOOLEAN' if name == 'valid' else 'VARCHAR'}) AS {name}"
            for name, _ in _RUN_ROWS_COLUMNS
        )
        scratch.duck.execute(statement.replace(ROWS, f"SELECT {columns} LIMIT 0"))
        return
    rows_sql, params = source_rows_sql(source, partitions, dialect="postgres")
    raw = scratch.new_file("source.csv")
    copy_out(conn, rows_sql, params, raw)
    relation = f"(SELECT * FROM {scratch.read_csv_sql(raw, ('set_id', 'mobile_raw'))})"
    rows = f"SELECT {names} FROM ({normalized_numbers_sql(relation, 'mobile_raw')})"
    scratch.duck.execute(statement.replace(ROWS, rows))
    raw.unlink()


def load_run_rows(
    conn: PgConnection,
    source: SourceTable,
    partitions: Sequence[Partition],
    scratch: Scratch,
) -> None:
    """Normalize the source rows of ``partitions`` into the TEMP table :data:`PG_RUN_ROWS`
    (replaced), with the columns and values of the DuckDB store's ``RUN_ROWS``."""
    columns = ", ".join(f"{name} {sql_type}" for name, sql_type in _RUN_ROWS_COLUMNS)
    conn.execute(f"DROP TABLE IF EXISTS {PG_RUN_ROWS}")
    conn.execute(f"CREATE TEMP TABLE {RUN_ROWS} ({columns})")
    if partitions:
        normalized = scratch.new_file("run_rows.csv")
        target = f"{copy_target(normalized)} ({_CSV}, HEADER false, USE_TMP_FILE false)"
        normalize_rows(conn, source, partitions, scratch, f"COPY ({ROWS}) TO {target}")
        copy_in(conn, PG_RUN_ROWS, normalized)
        normalized.unlink()
    # Autovacuum never analyzes TEMP tables: without statistics the joins are planned blind.
    conn.execute(f"ANALYZE {PG_RUN_ROWS}")


#: The memory each sort or hash of a run's set-based statements may take before it spills.
#: PostgreSQL's default, 4 MB, spills the distinct numbers of a 1M-row run to disk: 64 MB
#: took the plan of that time (1M numbers against a 10M-row cache, hashed in one process)
#: from 17 s to 12 s here; 256 MB no further (``make bench ARGS=postgres``).
RUN_WORK_MEM = "64MB"


def planner_settings(conn: PgConnection) -> None:
    """:data:`RUN_WORK_MEM` for the rest of the transaction of a statement that sorts or
    hashes a run's numbers."""
    conn.execute(f"SET LOCAL work_mem = '{RUN_WORK_MEM}'")
