"""The shared store: PostgreSQL holds the state, every run on any machine sees it.

Answers are journaled locally as they arrive (one ``write`` each, as with DuckDB) and
handed to a fold into PostgreSQL every :data:`FOLD_EVERY_S` (50 ms), so that they are
in PostgreSQL within :data:`DURABLE_WITHIN_S` (100 ms) of arriving: a pod that dies loses
at most the answers in flight and those of the last 100 ms; the next run, on any
machine, pays only for what is missing. Runs sharing the tables take turns through an
advisory lock (:mod:`~mobile_status_dagster.core.store.postgres.lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import psycopg

from mobile_status_dagster.core.errors import (
    DatabaseOpenError,
    SegmentRefusedError,
    StoreWriteError,
)
from mobile_status_dagster.core.files import private_directory
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.numbers import error_reason
from mobile_status_dagster.core.store.duckdb_store import ENVIRONMENT_ERRORS
from mobile_status_dagster.core.store.plan import RunPlan
from mobile_status_dagster.core.store.postgres import lock, plan, publish, record
from mobile_status_dagster.core.store.postgres.connection import PostgresTarget
from mobile_status_dagster.core.store.postgres.schema import ensure_schema
from mobile_status_dagster.core.store.publish import PartitionOutcome
from mobile_status_dagster.core.store.record import FoldResult
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable

DURABLE_WITHIN_S = 0.1
"""The promise: an answer is in PostgreSQL at most this long after it arrives (so a run
killed at any moment loses the answers in flight and those of the last 100 ms)."""
FOLD_EVERY_S = 0.05
"""How often the journal's segment is handed to a fold. An answer waits for the next
hand-over and then for its fold to commit (about 20–40 ms on loopback), so the cadence
is half the promise: at 100 ms, a kill during a slow fold lost 132 ms of answers."""

#: PostgreSQL errors caused by what a segment holds (a value out of range, a bad
#: encoding): the segment is quarantined. Any other error (the connection, the disk, a
#: lock timeout) leaves it in the journal for the next run.
_DATA_ERRORS: tuple[type[psycopg.Error], ...] = (psycopg.DataError, psycopg.IntegrityError)


def default_journal_dir(target: PostgresTarget, tables: Tables) -> Path:
    """A private local directory for the journal and spool of ``target``'s ``tables``.

    ``<tmp>/mobile_status-<uid>/<digest of the target and prefix>``: a run on the same
    machine folds what a killed run left; on another machine there is nothing to fold
    (the answers older than the fold interval are in PostgreSQL already).
    """
    key = f"{target.shown}|{target.schema or ''}|{tables.prefix}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mobile_status-{os.getuid()}" / digest


@dataclass
class PostgresStore:
    """The state of ``target``; the journal in ``journal_dir`` (default: a private
    temporary directory, see :func:`default_journal_dir`)."""

    target: PostgresTarget
    journal_dir: Path = field(default_factory=Path)
    name: str = "PostgreSQL"
    fold_every_s: float = FOLD_EVERY_S
    # The folds of a turn share one session (see record.FoldSession); closed at its end.
    _fold_session: record.FoldSession | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _in_turn: bool = field(default=False, init=False, repr=False, compare=False)
    _fold_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    @classmethod
    def for_tables(cls, target: PostgresTarget, tables: Tables) -> PostgresStore:
        """The store of ``target`` with its journal in the default local directory."""
        return cls(target, default_journal_dir(target, tables))

    @contextlib.asynccontextmanager
    async def _turn(self, tables: Tables) -> AsyncIterator[None]:
        private_directory(self.journal_dir.parent)
        private_directory(self.journal_dir)
        async with lock.provider_turn(self.target, tables):
            self._in_turn = True
            try:
                yield
            finally:
                self._in_turn = False
                with self._fold_lock:
                    self._close_fold_session()

    def turn(self, tables: Tables) -> contextlib.AbstractAsyncContextManager[None]:
        """The advisory lock of ``tables`` in the database, across machines."""
        return self._turn(tables)

    def plan(
        self,
        source: SourceTable,
        partitions: Sequence[Partition],
        *,
        tables: Tables,
        freshness: Freshness,
        now: datetime,
        force_refresh: bool,
        spool: Path,
    ) -> RunPlan:
        """Prepare the tables, check the source, plan the run, write the spool."""
        with self.target.connect()() as conn:
            ensure_schema(conn, tables)
            plan.check_source_exists(conn, source)
            return plan.plan_run(
                conn,
                source,
                partitions,
                tables=tables,
                freshness=freshness,
                now=now,
                force_refresh=force_refresh,
                spool=spool,
            )

    def fold(self, segment: Path, *, tables: Tables) -> FoldResult:
        """Fold ``segment`` into PostgreSQL; data errors are :class:`SegmentRefusedError`."""
        try:
            if not self._in_turn:
                return record.fold_in_session(self.target.connect(), segment, tables=tables)
            with self._fold_lock:
                return self._fold_in_turn(segment, tables)
        except _DATA_ERRORS as error:
            raise SegmentRefusedError(self._reason(error)) from None
        except duckdb.Error as error:  # parsing the segment, in a local DuckDB
            if not isinstance(error, ENVIRONMENT_ERRORS):
                raise SegmentRefusedError(error_reason(error)) from None
            raise self._fold_failed(segment, error) from None
        except (psycopg.Error, OSError) as error:
            raise self._fold_failed(segment, error) from None

    def _fold_in_turn(self, segment: Path, tables: Tables) -> FoldResult:
        session = self._fold_session
        if session is None or session.tables != tables:
            self._close_fold_session()
            conn = self.target.open()
            try:
                session = record.FoldSession(conn, tables)
            except BaseException:
                conn.close()
                raise
            self._fold_session = session
        try:
            return session.fold(segment)
        except BaseException:
            self._close_fold_session()  # a session in doubt is not reused
            raise

    def _close_fold_session(self) -> None:
        if self._fold_session is not None:
            self._fold_session.conn.close()
            self._fold_session = None

    def _fold_failed(self, segment: Path, error: BaseException) -> StoreWriteError:
        return StoreWriteError(
            f"could not fold journal segment {segment.name} into PostgreSQL ({self._reason(error)})"
        )

    def publish(
        self,
        source: SourceTable,
        partitions: Sequence[Partition],
        *,
        tables: Tables,
        run_id: str,
        freshness: Freshness,
        now: datetime,
        force_refresh: bool,
    ) -> list[PartitionOutcome]:
        """Publish every complete partition in one transaction."""
        try:
            with self.target.connect()() as conn:
                return publish.publish_partitions(
                    conn,
                    source,
                    partitions,
                    tables=tables,
                    run_id=run_id,
                    freshness=freshness,
                    now=now,
                    force_refresh=force_refresh,
                )
        except (psycopg.Error, DatabaseOpenError) as error:
            raise StoreWriteError(
                f"could not publish to PostgreSQL ({type(error).__name__}: {self._reason(error)})"
            ) from None

    def _reason(self, error: BaseException) -> str:
        """The error's first line, the URL's password masked, numbers masked."""
        return self.target.scrub(error_reason(error))
