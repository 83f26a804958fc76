"""Short-lived DuckDB connections that wait out another process's lock.

DuckDB lets one process at a time open a file read-write. Every store function takes
a :data:`Connect` — a factory of connection context managers — opens it for one unit
of work and closes it, so the file lock is never held across network waits.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import duckdb

from mobile_status_dagster.core.errors import DatabaseOpenError

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
"""A factory: ``with connect() as conn: ...`` opens, and always closes, a connection."""

#: DuckDB settings of the databases the library opens, unless configured otherwise:
#: no insertion-order buffering (nothing here relies on a table's physical row order),
#: which lowers the memory big inserts and copies need.
DEFAULT_DUCKDB_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "preserve_insertion_order": False,
}

#: How long to wait for another process to release the file before giving up.
DEFAULT_LOCK_WAIT_S = 120.0


def is_lock_error(error: BaseException) -> bool:
    """DuckDB's "Could not set lock on file" (another process holds the file)."""
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def connect_with_retry(
    database: str,
    *,
    read_only: bool = False,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
    config: dict[str, str | bool | int | float | list[str]] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open ``database``, retrying with jittered backoff while another process holds it.

    Starts from :data:`DEFAULT_DUCKDB_CONFIG`; ``config`` overrides any of it (e.g.
    ``{"memory_limit": "512MB"}`` to cap DuckDB's memory; it spills to disk beyond).

    Raises:
        DatabaseOpenError: the file cannot be opened (no such directory, not a DuckDB
            file), or another process kept it locked for ``lock_wait_s``.
    """
    deadline = time.monotonic() + lock_wait_s
    delay = 0.02
    while True:
        try:
            settings = {**DEFAULT_DUCKDB_CONFIG, **(config or {})}
            return duckdb.connect(database, read_only=read_only, config=settings)
        except duckdb.Error as error:
            if not is_lock_error(error) or time.monotonic() + delay > deadline:
                raise DatabaseOpenError(f"cannot open database {database}: {error}") from None
        time.sleep(random.uniform(delay / 2, delay))
        delay = min(delay * 2, 1.0)


def file_connect(
    database: str,
    *,
    read_only: bool = False,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
    config: dict[str, str | bool | int | float | list[str]] | None = None,
) -> Connect:
    """A :data:`Connect` for a DuckDB file: each connection always closes.

    Example::

        connect = file_connect("mobile_status.duckdb")
        with connect() as conn:
            conn.sql("select count(*) from mobile_status").show()
    """

    @contextlib.contextmanager
    def connect() -> Iterator[duckdb.DuckDBPyConnection]:
        conn = connect_with_retry(
            database, read_only=read_only, lock_wait_s=lock_wait_s, config=config
        )
        try:
            yield conn
        finally:
            conn.close()

    return connect


@contextlib.contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``BEGIN`` … ``COMMIT``, or ``ROLLBACK`` if the body raises."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
