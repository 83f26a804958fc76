"""The source table in PostgreSQL: the set ids it holds (the twin of
:func:`mobile_status_dagster.core.store.source.distinct_set_ids`)."""

from __future__ import annotations

from mobile_status_dagster.core.errors import ConfigurationError
from mobile_status_dagster.core.store.number_sql import quote_identifier
from mobile_status_dagster.core.store.postgres.plan import check_source_exists
from mobile_status_dagster.core.store.postgres.reports import C
from mobile_status_dagster.core.store.postgres.run_rows import PgConnection
from mobile_status_dagster.core.store.source import SourceTable, quote_table


def distinct_set_ids(conn: PgConnection, source: SourceTable) -> list[str]:
    """The set ids present in ``source``, sorted by code point; empty when the table does
    not exist yet. A missing column is a :class:`ConfigurationError` naming it."""
    if source.set_column is None:
        return []
    try:
        check_source_exists(conn, source)
    except ConfigurationError as error:
        if error.setting == "source_table":
            return []
        raise
    column = quote_identifier(source.set_column)
    # No parameters: psycopg sends the text as it is (a ``%`` in a name needs no escape).
    rows = conn.execute(
        f"SELECT s FROM (SELECT DISTINCT CAST({column} AS VARCHAR) AS s "
        f"FROM {quote_table(source.table)}) AS sets WHERE s IS NOT NULL ORDER BY s {C}"
    ).fetchall()
    return [str(row[0]) for row in rows]
