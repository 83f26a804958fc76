"""Which store a run uses: the one home of "DuckDB or PostgreSQL" in the Dagster layer.

The factory's store key (``duckdb_resource_key``, default ``duckdb``: the name is kept
for compatibility) holds either a ``dagster_duckdb.DuckDBResource`` (the embedded
default: a DuckDB file) or a
:class:`~mobile_status_dagster.integration.resources.PostgresStoreResource` (a shared
PostgreSQL database). :func:`store_access` turns that resource into a
:class:`StoreAccess`: the engine's :class:`~mobile_status_dagster.core.store.backend.StateStore`
for a run, and short read sessions (:class:`StoreReads`) for the checks, the derived
assets, the sensors, the schedule and the CLI, each read dispatched to
:mod:`mobile_status_dagster.core.store` or its PostgreSQL twin
:mod:`mobile_status_dagster.core.store.postgres`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import duckdb
import psycopg
from dagster_duckdb import DuckDBResource

from mobile_status_dagster.core.engine import journal_dir_for
from mobile_status_dagster.core.errors import StoreWriteError
from mobile_status_dagster.core.freshness import Freshness
from mobile_status_dagster.core.numbers import error_reason
from mobile_status_dagster.core.status import Status
from mobile_status_dagster.core.store import audit_checks, reports, schema, summaries
from mobile_status_dagster.core.store import load as duckdb_load
from mobile_status_dagster.core.store import plan as duckdb_plan
from mobile_status_dagster.core.store import source as duckdb_source
from mobile_status_dagster.core.store.audit_checks import CheckOutcome
from mobile_status_dagster.core.store.backend import StateStore
from mobile_status_dagster.core.store.duckdb_store import DuckDBStore
from mobile_status_dagster.core.store.plan import RunPlan
from mobile_status_dagster.core.store.postgres import audit_checks as pg_audit_checks
from mobile_status_dagster.core.store.postgres import files as pg_files
from mobile_status_dagster.core.store.postgres import plan as pg_plan
from mobile_status_dagster.core.store.postgres import reports as pg_reports
from mobile_status_dagster.core.store.postgres import schema as pg_schema
from mobile_status_dagster.core.store.postgres import source as pg_source
from mobile_status_dagster.core.store.postgres import summaries as pg_summaries
from mobile_status_dagster.core.store.postgres.connection import PostgresTarget
from mobile_status_dagster.core.store.postgres.run_rows import PgConnection
from mobile_status_dagster.core.store.postgres.store import PostgresStore
from mobile_status_dagster.core.store.reports import Charges, StatusCount
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.core.store.source import Partition, SourceTable
from mobile_status_dagster.integration.resources import PostgresStoreResource, closing_connect

StoreResource = DuckDBResource | PostgresStoreResource
"""What the factory's store key may hold."""

ToPartitions = Callable[[Sequence[str]], Sequence[Partition]]


class StoreReads(Protocol):
    """The reads (and the derived tables' rebuilds) of one short session on a store."""

    def ensure_schema(self, tables: Tables) -> None: ...
    def set_ids_published_by(self, run_id: str, *, tables: Tables) -> list[str]: ...
    def published_set_ids(self, *, tables: Tables) -> list[str]: ...
    def distinct_set_ids(self, source: SourceTable) -> list[str]: ...
    def status_counts(self, set_ids: Sequence[str], *, tables: Tables) -> list[StatusCount]: ...
    def charges_for_runs(self, run_ids: Sequence[str], *, tables: Tables) -> list[Charges]: ...
    def charges_by_set(
        self, set_ids: Sequence[str], *, tables: Tables
    ) -> list[tuple[str, Charges]]: ...
    def coverage(
        self,
        source: SourceTable,
        to_partitions: ToPartitions,
        *,
        tables: Tables,
        run_id: str | None,
    ) -> CheckOutcome: ...
    def audit_reconciliation(self, *, tables: Tables, run_id: str | None) -> CheckOutcome: ...
    def no_double_billing(
        self, freshness: Freshness, *, tables: Tables, run_id: str | None
    ) -> CheckOutcome: ...
    def rebuild_summary(self, *, tables: Tables) -> int: ...
    def rebuild_charges(self, *, tables: Tables) -> int: ...
    def row_count(self, table: str) -> int: ...
    def summary_by_set_and_status(self, *, tables: Tables) -> list[tuple[str, str, int]]: ...
    def charges_totals(self, *, tables: Tables) -> list[tuple[str, int, int, Decimal]]: ...
    def stale_partitions(
        self,
        source: SourceTable,
        partitions: Sequence[Partition],
        *,
        tables: Tables,
        freshness: Freshness,
        now: datetime,
    ) -> list[str]: ...
    def plan(
        self,
        source: SourceTable,
        partitions: Sequence[Partition],
        *,
        tables: Tables,
        freshness: Freshness,
        now: datetime,
        force_refresh: bool,
    ) -> RunPlan:
        """Prepare the tables, check the source and plan a run (no spool, no call)."""
        ...


class StoreAccess(Protocol):
    """A store as the Dagster layer and the CLI use it."""

    @property
    def name(self) -> str:
        """``DuckDB`` or ``PostgreSQL``, for messages."""
        ...

    @property
    def shown(self) -> str:
        """Where the store is, safe to print (a path, or the URL with its password masked)."""
        ...

    def state_store(self, tables: Tables) -> StateStore:
        """The engine's store for a run over ``tables``."""
        ...

    def reads(self) -> AbstractContextManager[StoreReads]:
        """A short session, always closed when the block ends."""
        ...

    def scrub(self, text: str) -> str:
        """``text`` with any secret of the store's location masked."""
        ...

    def load_file(
        self, path: Path, *, set_id: str, column: str | None, replace: bool
    ) -> duckdb_load.LoadResult:
        """Load a number file into set ``set_id`` of the default source table."""
        ...

    def export_set(
        self, set_id: str, statuses: Sequence[Status], out: Path, *, tables: Tables
    ) -> int:
        """Write the set's numbers with ``statuses`` to ``out``; the count written."""
        ...


@dataclass(frozen=True)
class _DuckDBReads:
    conn: duckdb.DuckDBPyConnection

    def ensure_schema(self, tables: Tables) -> None:
        schema.ensure_schema(self.conn, tables)

    def set_ids_published_by(self, run_id: str, *, tables: Tables) -> list[str]:
        return reports.set_ids_published_by(self.conn, run_id, tables=tables)

    def published_set_ids(self, *, tables: Tables) -> list[str]:
        return reports.published_set_ids(self.conn, tables=tables)

    def distinct_set_ids(self, source: SourceTable) -> list[str]:
        return duckdb_source.distinct_set_ids(self.conn, source)

    def status_counts(self, set_ids: Sequence[str], *, tables: Tables) -> list[StatusCount]:
        return reports.status_counts(self.conn, set_ids, tables=tables)

    def charges_for_runs(self, run_ids: Sequence[str], *, tables: Tables) -> list[Charges]:
        return reports.charges_for_runs(self.conn, run_ids, tables=tables)

    def charges_by_set(
        self, set_ids: Sequence[str], *, tables: Tables
    ) -> list[tuple[str, Charges]]:
        return reports.charges_by_set(self.conn, set_ids, tables=tables)

    def coverage(
        self,
        source: SourceTable,
        to_partitions: ToPartitions,
        *,
        tables: Tables,
        run_id: str | None,
    ) -> CheckOutcome:
        return audit_checks.coverage(self.conn, source, to_partitions, tables=tables, run_id=run_id)

    def audit_reconciliation(self, *, tables: Tables, run_id: str | None) -> CheckOutcome:
        return audit_checks.audit_reconciliation(self.conn, tables=tables, run_id=run_id)

    def no_double_billing(
        self, freshness: Freshness, *, tables: Tables, run_id: str | None
    ) -> CheckOutcome:
        return audit_checks.no_double_billing(self.conn, freshness, tables=tables, run_id=run_id)

    def rebuild_summary(self, *, tables: Tables) -> int:
        return summaries.rebuild_summary(self.conn, tables=tables)

    def rebuild_charges(self, *, tables: Tables) -> int:
        return summaries.rebuild_charges(self.conn, tables=tables)

    def row_count(self, table: str) -> int:
        return summaries.row_count(self.conn, table)

    def summary_by_set_and_status(self, *, tables: Tables) -> list[tuple[str, str, int]]:
        return summaries.summary_by_set_and_status(self.conn, tables=tables)

    def charges_totals(self, *, tables: Tables) -> list[tuple[str, int, int, Decimal]]:
        return summaries.charges_totals(self.conn, tables=tables)

    def stale_partitions(
        self,
        source: SourceTable,
        partitions: Sequence[Partition],
        *,
        tables: Tables,
        freshness: Freshness,
        now: datetime,
    ) -> list[str]:
        return summaries.stale_partitions(
            self.conn, source, partitions, tables=tables, freshness=freshness, now=now
        )

    def plan(
        self,
        source: SourceTable,
        partitions: Sequence[Partition],
        *,
        tables: Tables,
        freshness: Freshness,
        now: datetime,
        force_refresh: bool,
    ) -> RunPlan:
        schema.ensure_schema(self.conn, tables)
        source.check_exists(self.conn)
        return duckdb_plan.plan_run(
            self.conn,
            source,
            partitions,
            tables=tables,
            freshness=freshness,
            now=now,
            force_refresh=force_refresh,
        )


@dataclass(frozen=True)
class _PostgresReads:
    conn: PgConnection

    def ensure_schema(self, tables: Tables) -> None:
        pg_schema.ensure_schema(self.conn, tables)

    def set_ids_published_by(self, run_id: str, *, tables: Tables) -> list[str]:
        return pg_reports.set_ids_published_by(self.conn, run_id, tables=tables)

    def published_set_ids(self, *, tables: Tables) -> list[str]:
        return pg_reports.published_set_ids(self.conn, tables=tables)

    def distinct_set_ids(self, source: SourceTable) -> list[str]:
        return pg_source.distinct_set_ids(self.conn, source)

    def status_counts(self, set_ids: Sequence[str], *, tables: Tables) -> list[StatusCount]:
        return pg_reports.status_counts(self.conn, set_ids, tables=tables)

    def charges_for_runs(self, run_ids: Sequence[str], *, tables: Tables) -> list[Charges]:
        return pg_reports.charges_for_runs(self.conn, run_ids, tables=tables)

    def charges_by_set(
        self, set_ids: Sequence[str], *, tables: Tables
    ) -> list[tuple[str, Charges]]:
        return pg_reports.charges_by_set(self.conn, set_ids, tables=tables)

    def coverage(
        self,
        source: SourceTable,
        to_partitions: ToPartitions,
        *,
        tables: Tables,
        run_id: str | None,
    ) -> CheckOutcome:
        return pg_audit_checks.coverage(
            self.conn, source, to_partitions, tables=tables, run_id=run_id
        )

    def audit_reconciliation(self, *, tables: Tables, run_id: str | None) -> CheckOutcome:
        return pg_audit_checks.audit_reconciliation(self.conn, tables=tables, run_id=run_id)

    def no_double_billing(
        self, freshness: Freshness, *, tables: Tables, run_id: str | None
    ) -> CheckOutcome:
        return pg_audit_checks.no_double_billing(self.conn, freshness, tables=tables, run_id=run_id)

    def rebuild_summary(self, *, tables: Tables) -> int:
        return pg_summaries.rebuild_summary(self.conn, tables=tables)

    def rebuild_charges(self, *, tables: Tables) -> int:
        return pg_summaries.rebuild_charges(self.conn, tables=tables)

    def row_count(self, table: str) -> int:
        return pg_summaries.row_count(self.conn, table)

    def summary_by_set_and_status(self, *, tables: Tables) -> list[tuple[str, str, int]]:
        return pg_summaries.summary_by_set_and_status(self.conn, tables=tables)

    def charges_totals(self, *, tables: Tables) -> list[tuple[str, int, int, Decimal]]:
        return pg_summaries.charges_totals(self.conn, tables=tables)

    def stale_partitions(
        self,
        source: SourceTable,
        partitions: Sequence[Partition],
        *,
        tables: Tables,
        freshness: Freshness,
        now: datetime,
    ) -> list[str]:
        return pg_summaries.stale_partitions(
            self.conn, source, partitions, tables=tables, freshness=freshness, now=now
        )

    def plan(
        self,
        source: SourceTable,
        partitions: Sequence[Partition],
        *,
        tables: Tables,
        freshness: Freshness,
        now: datetime,
        force_refresh: bool,
    ) -> RunPlan:
        pg_schema.ensure_schema(self.conn, tables)
        pg_plan.check_source_exists(self.conn, source)
        return pg_plan.plan_run(
            self.conn,
            source,
            partitions,
            tables=tables,
            freshness=freshness,
            now=now,
            force_refresh=force_refresh,
        )


@dataclass(frozen=True)
class DuckDBAccess:
    """The embedded store: the DuckDB file of ``resource``."""

    resource: DuckDBResource
    name: str = "DuckDB"

    @property
    def shown(self) -> str:
        return self.resource.database

    def state_store(self, tables: Tables) -> StateStore:
        return DuckDBStore(
            closing_connect(self.resource), journal_dir_for(self.resource.database, tables)
        )

    @contextlib.contextmanager
    def reads(self) -> Iterator[StoreReads]:
        with closing_connect(self.resource)() as conn:
            yield _DuckDBReads(conn)

    def scrub(self, text: str) -> str:
        return text

    def load_file(
        self, path: Path, *, set_id: str, column: str | None, replace: bool
    ) -> duckdb_load.LoadResult:
        with closing_connect(self.resource)() as conn:
            return duckdb_load.load_file(conn, path, set_id=set_id, column=column, replace=replace)

    def export_set(
        self, set_id: str, statuses: Sequence[Status], out: Path, *, tables: Tables
    ) -> int:
        with closing_connect(self.resource)() as conn:
            return summaries.export_set(conn, set_id, statuses, out, tables=tables)


@dataclass(frozen=True)
class PostgresAccess:
    """The shared store: the PostgreSQL database of ``target``."""

    target: PostgresTarget
    name: str = "PostgreSQL"

    @property
    def shown(self) -> str:
        return self.target.shown

    def state_store(self, tables: Tables) -> StateStore:
        return PostgresStore.for_tables(self.target, tables)

    @contextlib.contextmanager
    def reads(self) -> Iterator[StoreReads]:
        with self.target.connect()() as conn:
            yield _PostgresReads(conn)

    def scrub(self, text: str) -> str:
        return self.target.scrub(text)

    def load_file(
        self, path: Path, *, set_id: str, column: str | None, replace: bool
    ) -> duckdb_load.LoadResult:
        try:
            with self.target.connect()() as conn:
                return pg_files.load_file(conn, path, set_id=set_id, column=column, replace=replace)
        except psycopg.Error as error:
            raise self._write_failed("load into", error) from None

    def export_set(
        self, set_id: str, statuses: Sequence[Status], out: Path, *, tables: Tables
    ) -> int:
        try:
            with self.target.connect()() as conn:
                return pg_files.export_set(conn, set_id, statuses, out, tables=tables)
        except psycopg.Error as error:
            raise self._write_failed("export from", error) from None

    def _write_failed(self, what: str, error: psycopg.Error) -> StoreWriteError:
        reason = self.scrub(error_reason(error))
        return StoreWriteError(f"could not {what} the PostgreSQL store {self.shown} ({reason})")


def access_for(resource: StoreResource) -> StoreAccess:
    """The :class:`StoreAccess` of a store resource."""
    if isinstance(resource, PostgresStoreResource):
        return PostgresAccess(resource.target())
    return DuckDBAccess(resource)


def store_access(resources: Any, key: str) -> StoreAccess:
    """The store under ``key`` in a context's ``resources`` (a ``DuckDBResource`` or a
    ``PostgresStoreResource``, else ``DagsterInvalidDefinitionError``)."""
    value = getattr(resources, key)
    if not isinstance(value, DuckDBResource | PostgresStoreResource):
        raise dg.DagsterInvalidDefinitionError(
            f"resource {key!r} must be a DuckDBResource or a PostgresStoreResource, "
            f"got {type(value).__name__}"
        )
    return access_for(value)
