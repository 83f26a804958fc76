"""What the engine needs of a store: a turn, a plan, folding answers, publishing.

Two stores implement it: :class:`~mobile_status_dagster.core.store.duckdb_store.DuckDBStore`
(a DuckDB file, a journal and a file lock beside it: the embedded default) and
:class:`~mobile_status_dagster.core.store.postgres.store.PostgresStore` (PostgreSQL, an
advisory lock, answers folded into the database every 100 ms), for runs in separate
pods or machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Protocol

from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.store.plan import RunPlan
from mobile_status_dagster.core.store.publish import PartitionOutcome
from mobile_status_dagster.core.store.record import FoldResult
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable


class StateStore(Protocol):
    """Where a run keeps its state: the cache, the audit, the published rows."""

    name: str
    """``DuckDB`` or ``PostgreSQL``, for messages."""
    journal_dir: Path
    """The local directory of the answer journal and the plan's spool (private)."""
    fold_every_s: float
    """How often the answers journaled so far are folded into the store."""

    def turn(self, tables: Tables) -> AbstractAsyncContextManager[None]:
        """Wait until no other run calls the provider for ``tables``; hold the turn."""
        ...

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
        ...

    def fold(self, segment: Path, *, tables: Tables) -> FoldResult:
        """Fold one journal segment into the audit and the cache, exactly once.

        Raises:
            SegmentRefusedError: the store cannot take what the segment holds.
            DatabaseOpenError, StoreWriteError, UntrustedFileError: anything else; the
                segment stays in the journal.
        """
        ...

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
        """Publish every complete partition (see ``publish_partitions``).

        Raises:
            StoreWriteError: the store refused; nothing paid for is lost.
        """
        ...
