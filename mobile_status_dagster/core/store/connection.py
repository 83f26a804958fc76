"""Short-lived DuckDB connections that wait out another process's lock.

DuckDB lets one process at a time open a file read-write. Every store function takes
a :data:`Connect` — a factory of connection context managers — opens it for one unit
of work and closes it, so the file lock is never held across network waits.

The database holds phone numbers, so the files DuckDB creates for it are private to
the user (``0600``, :data:`~mobile_status_dagster.core.files.FILE_MODE`) whatever the
process umask. DuckDB takes no file mode: it creates the database file at connect, the
WAL (``<database>.wal``) at the first write and again after every checkpoint (which
deletes it), and its spill files while it works; it refuses an empty pre-created
database file and replaces a pre-created WAL. So a private umask
(:func:`~mobile_status_dagster.core.files.private_umask`) is held while a connection of
:func:`file_connect` is open, and while :func:`connect_with_retry` connects. It is the
process's umask: files other threads create meanwhile are private too (stricter, never
looser). An existing database keeps its mode: a file may be shared on purpose, and
``chmod 600`` (with its ``.wal``) makes an older one private.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import duckdb

from mobile_status_dagster.core import files
from mobile_status_dagster.core.errors import DatabaseOpenError

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
"""A factory: ``with connect() as conn: ...`` opens, and always closes, a connection."""

DEFAULT_MEMORY_LIMIT = f"{128 * (os.cpu_count() or 1)}MB"
"""DuckDB's memory limit unless configured: 128 MB per core (DuckDB runs a thread per
core), so ``256MB`` on 2 cores, whatever the sets and the warehouse hold. DuckDB's own
default is 80 % of the machine's memory, and its buffers grow with the rows a run plans
and publishes; under the limit it spills to disk instead (bench/README.md, "Where the
memory goes", measures what that bounds and what it costs)."""

#: DuckDB settings of the databases the library opens, unless configured otherwise:
#: no insertion-order buffering (nothing here relies on a table's physical row order),
#: which lowers the memory big inserts and copies need, and :data:`DEFAULT_MEMORY_LIMIT`.
DEFAULT_DUCKDB_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "preserve_insertion_order": False,
    "memory_limit": DEFAULT_MEMORY_LIMIT,
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
    ``{"memory_limit": "1GB"}`` to let DuckDB hold more before it spills to disk, or
    ``"80%"``, DuckDB's own default).

    A database file it creates is private to the user (see the module's docstring);
    for the WAL to be private too, keep the private umask held while the connection
    is open, as :func:`file_connect` does.

    Raises:
        DatabaseOpenError: the file cannot be opened (no such directory, not a DuckDB
            file), or another process kept it locked for ``lock_wait_s``.
    """
    deadline = time.monotonic() + lock_wait_s
    delay = 0.02
    while True:
        try:
            settings = {**DEFAULT_DUCKDB_CONFIG, **(config or {})}
            with files.private_umask():
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

    While a connection is open the private umask is held, so the database file, its
    WAL and DuckDB's spill files are created readable by the user only.

    Example::

        connect = file_connect("mobile_status.duckdb")
        with connect() as conn:
            conn.sql("select count(*) from mobile_status").show()
    """

    @contextlib.contextmanager
    def connect() -> Iterator[duckdb.DuckDBPyConnection]:
        with files.private_umask():
            conn = connect_with_retry(
                database, read_only=read_only, lock_wait_s=lock_wait_s, config=config
            )
            try:
                yield conn
            finally:
                conn.close()

    return connect


_BINARY_UNITS = {
    "bytes": 1,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
    "PiB": 1 << 50,
}


def memory_limit_bytes(conn: duckdb.DuckDBPyConnection) -> int | None:
    """DuckDB's memory limit on ``conn``, in bytes (DuckDB shows it as ``244.1 MiB``);
    ``None`` if DuckDB shows it in a form this does not know (a newer DuckDB, say)."""
    (shown,) = conn.execute("SELECT current_setting('memory_limit')").fetchone() or ("",)
    number, _, unit = str(shown).partition(" ")
    try:
        return int(float(number) * _BINARY_UNITS[unit])
    except (KeyError, ValueError):
        return None


def copy_target(path: Path) -> str:
    """``path`` as the target of ``COPY ... TO``, which takes no bound parameter."""
    return "'" + str(path).replace("'", "''") + "'"


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
