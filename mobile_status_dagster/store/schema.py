"""The tables this library owns, created on first use.

``mobile_status_latest``  one row per number: its latest answer (the cache).
``provider_calls``        one row per provider attempt, appended, never rewritten (the audit);
                          ``reason`` says why the number was paid for: new, stale, retry
                          (last answer unknown or unusable) or forced (force_refresh).
``mobile_status``         the published result: one row per input row, per set.
``journal_segments``      which answer-journal segments were folded in (crash recovery).
"""

from __future__ import annotations

import duckdb

from mobile_status_dagster.status import Status

CACHE = "mobile_status_latest"
AUDIT = "provider_calls"
PUBLISHED = "mobile_status"
SEGMENTS = "journal_segments"
DEFAULT_SOURCE = "number_sets"

MONEY = "DECIMAL(18, 6)"

_DDL = f"""
CREATE TABLE IF NOT EXISTS {CACHE} (
    mobile        VARCHAR NOT NULL,
    status_code   TINYINT,
    status        VARCHAR,
    operator      VARCHAR,
    order_number  VARCHAR,
    provider_code INTEGER,
    checked_at    TIMESTAMPTZ NOT NULL,
    run_id        VARCHAR
);
CREATE TABLE IF NOT EXISTS {AUDIT} (
    order_number     VARCHAR,
    mobile           VARCHAR NOT NULL,
    provider_code    INTEGER,
    provider_message VARCHAR,
    status_code      TINYINT,
    operator         VARCHAR,
    billed           BOOLEAN NOT NULL,
    possibly_billed  BOOLEAN NOT NULL,
    unit_price       {MONEY} NOT NULL,
    currency         VARCHAR NOT NULL,
    set_id           VARCHAR,
    run_id           VARCHAR NOT NULL,
    requested_at     TIMESTAMPTZ NOT NULL,
    latency_ms       DOUBLE,
    attempt          SMALLINT NOT NULL,
    http_status      SMALLINT,
    error            VARCHAR,
    reason           VARCHAR
);
CREATE TABLE IF NOT EXISTS {PUBLISHED} (
    set_id          VARCHAR NOT NULL,
    mobile_raw      VARCHAR,
    mobile          VARCHAR,
    valid           BOOLEAN NOT NULL,
    invalid_reason  VARCHAR,
    status_code     TINYINT,
    status          VARCHAR,
    operator        VARCHAR,
    prefix_operator VARCHAR,
    ported          BOOLEAN,
    order_number    VARCHAR,
    checked_at      TIMESTAMPTZ,
    source          VARCHAR NOT NULL,
    run_id          VARCHAR
);
CREATE TABLE IF NOT EXISTS {SEGMENTS} (
    segment   VARCHAR PRIMARY KEY,
    run_id    VARCHAR,
    attempts  BIGINT,
    answers   BIGINT,
    folded_at TIMESTAMPTZ
);
"""

SOURCE_DDL = f"""
CREATE TABLE IF NOT EXISTS {DEFAULT_SOURCE} (
    set_id    VARCHAR NOT NULL,
    mobile    VARCHAR,
    loaded_at TIMESTAMPTZ DEFAULT current_timestamp
);
"""


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the library's tables if they are missing (idempotent)."""
    conn.execute(_DDL)


def status_label_sql(code_sql: str) -> str:
    """SQL mapping a status code expression to its label (``online``, …)."""
    whens = " ".join(f"WHEN {s.value} THEN '{s.label}'" for s in Status)
    return f"(CASE {code_sql} {whens} END)"
