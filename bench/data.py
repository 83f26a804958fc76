"""Big synthetic data, made in SQL: messy number sets, a seeded cache, a journal of answers."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from mobile_status_dagster.core.store.schema import CACHE, DEFAULT_TABLES, SOURCE_DDL, ensure_schema

_PREFIXES = "['139', '138', '186', '189', '133', '150', '177', '198']"


def numbers_sql(start: int, stop: int) -> str:
    """``SELECT i, m``: distinct valid numbers for ``i`` in ``[start, stop)``.

    7919 is prime to 10^8, so ``i * 7919 mod 10^8`` never repeats below 10^8.
    """
    return (
        f"SELECT i, {_PREFIXES}[1 + i % 8] || lpad(((i * 7919) % 100000000)::VARCHAR, 8, '0') AS m "
        f"FROM range({start}, {stop}) t(i)"
    )


def seed_messy_set(conn: duckdb.DuckDBPyConnection, set_id: str, count: int) -> None:
    """``count`` rows in ``number_sets``: the numbers ``[0, count)`` in six spellings, 2 % junk."""
    conn.execute(SOURCE_DDL)
    conn.execute(
        f"""
        INSERT INTO number_sets (set_id, mobile)
        SELECT ?, CASE
            WHEN i % 50 = 49 THEN 'not a number ' || i
            WHEN i % 6 = 0 THEN m
            WHEN i % 6 = 1
                THEN '+86 ' || substr(m, 1, 3) || '-' || substr(m, 4, 4) || '-' || substr(m, 8)
            WHEN i % 6 = 2 THEN '0086' || m
            WHEN i % 6 = 3 THEN m || '.0'
            WHEN i % 6 = 4 THEN '(' || substr(m, 1, 3) || ') ' || substr(m, 4)
            ELSE ' ' || m || ' ' END
        FROM ({numbers_sql(0, count)})
        """,
        [set_id],
    )


def write_journal(path: Path, count: int, *, run_id: str = "bench-seed") -> None:
    """A journal segment with ``count`` billed answers, just now, for the numbers ``[0, count)``."""
    now_us = int(time.time() * 1_000_000) - count
    path.write_text(f'{{"run": "{run_id}", "price": "0.05", "cur": "CNY"}}\n')
    body = path.with_suffix(".body")
    with duckdb.connect() as conn:
        conn.execute(
            f"""
            COPY (
                SELECT m, 'big' AS s, 'new' AS why, 1 AS n,
                       {now_us} + i AS t, 50.0 AS ms, 200 AS h, 2000 AS c,
                       md5(m) AS o, 1 + i % 5 AS st, 'CM' AS op, true AS b, true AS keep
                FROM ({numbers_sql(0, count)})
            ) TO '{body}' (FORMAT json)
            """
        )
    with path.open("ab") as out, body.open("rb") as lines:
        while chunk := lines.read(1 << 20):
            out.write(chunk)
    body.unlink()


def pad_cache(conn: duckdb.DuckDBPyConnection, start: int, stop: int) -> None:
    """Fresh cache rows for the numbers ``[start, stop)``, written directly (set-up only)."""
    ensure_schema(conn, DEFAULT_TABLES)
    conn.execute(
        f"""
        INSERT INTO {CACHE}
        SELECT m, 1, 'online', 'CM', md5(m), 2000, now(), 'bench-padding'
        FROM ({numbers_sql(start, stop)})
        """
    )
