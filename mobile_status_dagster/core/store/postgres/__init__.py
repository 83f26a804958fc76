"""PostgreSQL as the shared state store, for runs in separate pods or machines.

Same tables and columns as the DuckDB store, in the database's default schema unless
configured. Selected by a ``postgresql://`` store URL (``MOBILE_STATUS_STORE``).
"""

from mobile_status_dagster.core.store.postgres.connection import (
    PostgresTarget,
    is_postgres_url,
)

__all__ = ["PostgresTarget", "is_postgres_url"]
