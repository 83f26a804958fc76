"""Where the numbers come from: the user's source table and the partitions over it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.store.fragments import (
    Dialect,
    in_list_param,
    pg_identifier,
    placeholder,
)
from mobile_status_dagster.core.store.number_sql import quote_identifier
from mobile_status_dagster.core.store.schema import DEFAULT_SOURCE


def quote_table(name: str) -> str:
    """Quote ``table`` or ``schema.table`` as DuckDB identifiers."""
    parts = name.split(".")
    if not all(parts):
        raise ConfigurationError("source_table", f"{name!r} is not a table name")
    return ".".join(quote_identifier(part) for part in parts)


@dataclass(frozen=True)
class SourceTable:
    """The user's table of numbers: which column holds the number and which the partition.

    Partitions are either sets (``set_column``: one partition per distinct value) or
    time windows (``time_column``: a partition is the rows inside its window).
    """

    table: str = DEFAULT_SOURCE
    mobile_column: str = "mobile"
    set_column: str | None = "set_id"
    time_column: str | None = None

    def __post_init__(self) -> None:
        if (self.set_column is None) == (self.time_column is None):
            raise ConfigurationError(
                "set_column/time_column", "exactly one of them must name the partition column"
            )

    def check_exists(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Raise :class:`ConfigurationError` naming the missing table or column."""
        try:
            columns = {
                row[0]
                for row in conn.execute(
                    f"DESCRIBE SELECT * FROM {quote_table(self.table)}"
                ).fetchall()
            }
        except duckdb.CatalogException:
            raise ConfigurationError(
                "source_table", f"table {self.table!r} does not exist in the database"
            ) from None
        for setting, column in (
            ("mobile_column", self.mobile_column),
            ("set_column", self.set_column),
            ("time_column", self.time_column),
        ):
            if column is not None and column not in columns:
                raise ConfigurationError(
                    setting, f"column {column!r} is not in table {self.table!r}"
                )


@dataclass(frozen=True)
class Partition:
    """One partition: a set id, or a time window ``[start, end)`` with its key."""

    key: str
    start: datetime | None = None
    end: datetime | None = None


def source_rows_sql(
    source: SourceTable, partitions: Sequence[Partition], *, dialect: Dialect = "duckdb"
) -> tuple[str, dict[str, Any]]:
    """``SELECT set_id, mobile_raw`` for the rows of ``partitions``, and its named parameters.

    ``set_id`` is the partition key the row belongs to; ``mobile_raw`` the number as
    stored, cast to text. ``dialect="postgres"`` writes the parameters as psycopg's
    ``%(name)s`` (and a ``%`` in a quoted name as ``%%``), the set list as ``= ANY(…)``.
    """
    postgres = dialect == "postgres"

    def param(name: str) -> str:
        return placeholder(name, dialect)

    def ident(name: str) -> str:
        quoted = quote_identifier(name)
        return pg_identifier(quoted) if postgres else quoted

    table = quote_table(source.table)
    if postgres:
        table = pg_identifier(table)
    mobile = f"CAST({ident(source.mobile_column)} AS VARCHAR)"
    if source.set_column is not None:
        set_col = f"CAST({ident(source.set_column)} AS VARCHAR)"
        keys = in_list_param(set_col, "partition_keys", dialect)
        sql = f"SELECT {set_col} AS set_id, {mobile} AS mobile_raw FROM {table} WHERE {keys}"
        return sql, {"partition_keys": [p.key for p in partitions]}
    assert source.time_column is not None
    column = ident(source.time_column)
    whens: list[str] = []
    params: dict[str, Any] = {}
    for i, partition in enumerate(partitions):
        if partition.start is None or partition.end is None:
            raise ConfigurationError(
                "partitions", f"time partition {partition.key!r} has no window"
            )
        key = f"CAST({param(f'key_{i}')} AS VARCHAR)" if postgres else f"$key_{i}"
        whens.append(
            f"WHEN {column} >= {param(f'start_{i}')} AND {column} < {param(f'end_{i}')} THEN {key}"
        )
        params |= {
            f"start_{i}": partition.start,
            f"end_{i}": partition.end,
            f"key_{i}": partition.key,
        }
    key = f"(CASE {' '.join(whens)} END)"
    rows = f"SELECT {key} AS set_id, {mobile} AS mobile_raw FROM {table}"
    alias = " AS partitioned" if postgres else ""
    sql = f"SELECT * FROM ({rows}){alias} WHERE set_id IS NOT NULL"
    return sql, params


def distinct_set_ids(conn: duckdb.DuckDBPyConnection, source: SourceTable) -> list[str]:
    """The set ids present in ``source``, sorted; empty when the table does not exist yet."""
    if source.set_column is None:
        return []
    column = quote_identifier(source.set_column)
    try:
        rows = conn.execute(
            f"SELECT DISTINCT CAST({column} AS VARCHAR) AS s FROM {quote_table(source.table)} "
            "WHERE s IS NOT NULL ORDER BY s"
        ).fetchall()
    except duckdb.CatalogException:
        return []
    except duckdb.BinderException:
        raise ConfigurationError(
            "set_column", f"column {source.set_column!r} is not in table {source.table!r}"
        ) from None
    return [row[0] for row in rows]
