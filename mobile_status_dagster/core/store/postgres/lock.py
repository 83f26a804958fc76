"""Turns across machines: one run at a time calls the provider for a store's tables.

The PostgreSQL counterpart of the file lock beside a DuckDB file
(:mod:`mobile_status_dagster.core.store.file_lock`): a session-level advisory lock,
held from planning to the last answer on a session of its own. The server releases it
when that session ends, also when its holder is killed or its machine vanishes (the
session's TCP keepalives end it within about half a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from mobile_status_dagster.core.store.postgres.connection import PostgresTarget
from mobile_status_dagster.core.store.schema import Tables

log = logging.getLogger("mobile_status_dagster.core.engine")

_POLL_S = 0.25


def turn_key(tables: Tables) -> str:
    """The advisory lock's key text: one per instance (tables prefix) of a database."""
    return f"mobile_status_dagster:provider_turn:{tables.prefix}"


@contextlib.asynccontextmanager
async def provider_turn(target: PostgresTarget, tables: Tables) -> AsyncIterator[None]:
    """Wait until no other session, on any machine, holds the provider turn of ``tables``.

    Raises:
        DatabaseOpenError: the server cannot be reached.
    """
    conn = await asyncio.to_thread(target.open)
    try:
        waited = False
        key = turn_key(tables)
        while True:
            row = await asyncio.to_thread(
                lambda: conn.execute(
                    "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [key]
                ).fetchone()
            )
            if row is not None and row[0]:
                break
            if not waited:
                log.info("another run is calling the provider for these tables; waiting")
                waited = True
            await asyncio.sleep(_POLL_S)
        yield
    finally:
        await asyncio.to_thread(conn.close)  # ends the session: the lock goes with it
