"""One test body, both stores: a :class:`Warehouse` is a DuckDB file or a PostgreSQL database
seen through the same few calls, and the ``warehouse`` fixture of conftest (ids ``duckdb`` /
``postgresql``) hands a test each in turn.

SQL given to :meth:`Warehouse.query` must be valid on both (no ``GROUP BY ALL``); write
placeholders as ``?``, the PostgreSQL warehouse turns them into ``%s``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import psycopg
import pytest

from mobile_status_dagster.cli.runs import RunOutcome, materialize_sets
from mobile_status_dagster.core.engine import journal_dir_for
from mobile_status_dagster.core.store.postgres import PostgresTarget
from mobile_status_dagster.core.store.postgres.schema import create_default_source
from mobile_status_dagster.core.store.postgres.store import default_journal_dir
from mobile_status_dagster.core.store.schema import Tables
from mobile_status_dagster.integration import environment as settings
from mobile_status_dagster.integration.assets import MobileStatusAssets, build_mobile_status_assets
from mobile_status_dagster.integration.resources import PostgresStoreResource
from mobile_status_dagster.simulator import SimulatorServer
from tests import support

BACKENDS = ("duckdb", "postgresql")

#: The store's resource key: the factory's default, whichever backend sits behind it.
STORE_KEY = "duckdb"


class Warehouse(Protocol):
    """Where a test's sets, cache, audit and published rows live."""

    name: str

    @property
    def journal_dir(self) -> Path:
        """The local directory of the answer journal runs on this machine use."""
        ...

    def resources(self, sim: SimulatorServer, **api: Any) -> dict[str, Any]:
        """``mobile_status_api`` at ``sim`` (or ``base_url=``) and the store under its key."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``?`` placeholders) in a short connection of its own."""
        ...

    def seed_sets(self, sets: Mapping[str, Iterable[str | None]]) -> None:
        """Append rows to ``number_sets`` (created if needed)."""
        ...

    def tables(self) -> set[str]:
        """Names of the tables in the store's schema."""
        ...

    def cli_env(self, sim: SimulatorServer, **changes: str) -> dict[str, str]:
        """:func:`tests.support.cli_env` pointing the CLI at this store."""
        ...

    def storable(self, value: str | None) -> str | None:
        """``value`` as the source table can hold it (PostgreSQL text has no NUL)."""
        ...


_TABLES_SQL = (
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
)


@dataclass
class DuckDBWarehouse:
    """A DuckDB file (the embedded default)."""

    db: Path
    name: str = "duckdb"

    @property
    def journal_dir(self) -> Path:
        return journal_dir_for(str(self.db))

    def resources(self, sim: SimulatorServer, **api: Any) -> dict[str, Any]:
        return support.resources(sim, self.db, **api)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return support.query(self.db, sql, params)

    def seed_sets(self, sets: Mapping[str, Iterable[str | None]]) -> None:
        support.seed_sets(self.db, sets)

    def tables(self) -> set[str]:
        return {str(t) for (t,) in self.query(_TABLES_SQL)}

    def cli_env(self, sim: SimulatorServer, **changes: str) -> dict[str, str]:
        return support.cli_env(sim, self.db, **changes)

    def storable(self, value: str | None) -> str | None:
        return value


@dataclass
class PostgresWarehouse:
    """A fresh PostgreSQL database; runs read its URL from ``$MOBILE_STATUS_STORE``."""

    url: str
    unused_db: Path  # $MOBILE_STATUS_DB for the CLI: never created when the store is PostgreSQL
    name: str = "postgresql"

    @property
    def journal_dir(self) -> Path:
        return default_journal_dir(PostgresTarget(self.url), Tables())

    def resources(self, sim: SimulatorServer, **api: Any) -> dict[str, Any]:
        out = support.resources(sim, self.unused_db, **api)
        out[STORE_KEY] = PostgresStoreResource(url=dg.EnvVar(settings.STORE))
        return out

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), list(params))
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def seed_sets(self, sets: Mapping[str, Iterable[str | None]]) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            create_default_source(conn)
            with conn.cursor().copy("COPY number_sets (set_id, mobile) FROM STDIN") as copy:
                for set_id, numbers in sets.items():
                    for number in numbers:
                        copy.write_row((set_id, number))

    def tables(self) -> set[str]:
        return {str(t) for (t,) in self.query(_TABLES_SQL)}

    def cli_env(self, sim: SimulatorServer, **changes: str) -> dict[str, str]:
        return support.cli_env(sim, self.unused_db, **({settings.STORE: self.url} | changes))

    def storable(self, value: str | None) -> str | None:
        return None if value is None else value.replace("\x00", "\ufffd")


def make_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    """The warehouse ``request.param`` names (the ``warehouse`` fixture in conftest)."""
    if request.param == "duckdb":
        return DuckDBWarehouse(tmp_path / "numbers.duckdb")
    url = request.getfixturevalue("postgres_url")
    request.getfixturevalue("monkeypatch").setenv(settings.STORE, url)
    return PostgresWarehouse(url, tmp_path / "unused.duckdb")


def run_sets(
    sim: SimulatorServer,
    warehouse: Warehouse,
    set_ids: Sequence[str],
    *,
    instance: dg.DagsterInstance | None = None,
    built: MobileStatusAssets | None = None,
    force_refresh: bool = False,
    max_billed: int | None = None,
    **api: Any,
) -> list[RunOutcome]:
    """:func:`tests.support.run_sets` on ``warehouse``."""
    return materialize_sets(
        built or build_mobile_status_assets(),
        resources=warehouse.resources(sim, **api),
        instance=instance or dg.DagsterInstance.ephemeral(),
        set_ids=set_ids,
        force_refresh=force_refresh,
        max_billed=max_billed,
        log_level="WARNING",
    )
