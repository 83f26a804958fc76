"""The embedded store: a DuckDB file, its answer journal and its provider lock beside it."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from mobile_status_dagster.core.errors import (
    DatabaseOpenError,
    SegmentRefusedError,
    StoreWriteError,
)
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.numbers import error_reason
from mobile_status_dagster.core.store.connection import Connect
from mobile_status_dagster.core.store.file_lock import provider_turn
from mobile_status_dagster.core.store.plan import RunPlan, plan_run
from mobile_status_dagster.core.store.publish import PartitionOutcome, publish_partitions
from mobile_status_dagster.core.store.record import FoldResult, fold_segment
from mobile_status_dagster.core.store.schema import Tables, ensure_schema
from mobile_status_dagster.core.store.source import Partition, SourceTable

#: Fold the journal into DuckDB this often (and after 5,000 answers, see the engine).
FOLD_EVERY_S = 2.0

#: DuckDB errors that say nothing about the segment (the disk, memory, an interrupt, a
#: conflicting or read-only database): the segment stays in the journal for the next run.
ENVIRONMENT_ERRORS: tuple[type[duckdb.Error], ...] = (
    duckdb.OperationalError,  # IOException, OutOfMemoryException, TransactionException, …
    duckdb.InterruptException,
    duckdb.FatalException,
    duckdb.PermissionException,
)


@dataclass
class DuckDBStore:
    """A DuckDB database opened through ``connect``, its journal in ``journal_dir``."""

    connect: Connect
    journal_dir: Path
    name: str = "DuckDB"
    fold_every_s: float = FOLD_EVERY_S

    def turn(self, tables: Tables) -> AbstractAsyncContextManager[None]:
        """The file lock in the journal directory (one per database and instance)."""
        return provider_turn(self.journal_dir)

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
        with self.connect() as conn:
            ensure_schema(conn, tables)
            source.check_exists(conn)
            return plan_run(
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
        """Fold ``segment``; a DuckDB error of its data is a :class:`SegmentRefusedError`."""
        stage = "open"
        try:
            with self.connect() as conn:
                ensure_schema(conn, tables)
                stage = "fold"
                result = fold_segment(conn, segment, tables=tables)
                stage = "close"
            return result
        except duckdb.Error as error:
            reason = error_reason(error)
            if stage == "open":
                raise DatabaseOpenError(f"cannot open the database ({reason})") from None
            if stage == "close" or isinstance(error, ENVIRONMENT_ERRORS):
                raise StoreWriteError(
                    f"could not fold journal segment {segment.name} into DuckDB ({reason})"
                ) from None
            raise SegmentRefusedError(reason) from None

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
            with self.connect() as conn:
                return publish_partitions(
                    conn,
                    source,
                    partitions,
                    tables=tables,
                    run_id=run_id,
                    freshness=freshness,
                    now=now,
                    force_refresh=force_refresh,
                )
        except (duckdb.Error, DatabaseOpenError) as error:
            raise StoreWriteError(
                f"could not publish to DuckDB ({type(error).__name__}: {error})"
            ) from None
