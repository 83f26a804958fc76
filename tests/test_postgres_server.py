"""The PostgreSQL test server itself: it answers on its URL, each test's database is empty and
its own, and a wrong password is refused."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from tests.postgres_server import PostgresServerInfo

TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"


def test_connects_on_its_url(postgres_server: PostgresServerInfo) -> None:
    assert postgres_server.url == (
        f"postgresql://{postgres_server.user}:{postgres_server.password}"
        f"@127.0.0.1:{postgres_server.port}/{postgres_server.dbname}"
    )
    assert postgres_server.password not in repr(postgres_server)
    with psycopg.connect(postgres_server.url, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT current_database()").fetchone() == (postgres_server.dbname,)


def test_each_database_is_empty_and_its_own(
    postgres_server: PostgresServerInfo, postgres_url: str
) -> None:
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=10) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None
        assert name[0].startswith("test_")
        assert conn.execute(TABLES).fetchall() == []
        conn.execute("CREATE TABLE numbers (mobile text PRIMARY KEY)")
        assert conn.execute(TABLES).fetchall() == [("numbers",)]
    with postgres_server.connect() as conn:
        assert conn.execute(TABLES).fetchall() == []
    with postgres_server.fresh_database() as other, other.connect() as conn:
        assert other.dbname not in (name[0], postgres_server.dbname)
        assert conn.execute(TABLES).fetchall() == []


def test_wrong_password_is_refused(postgres_server: PostgresServerInfo) -> None:
    wrong = dataclasses.replace(postgres_server, password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as err:
        psycopg.connect(wrong.url, connect_timeout=10).close()
    assert postgres_server.password not in str(err.value)
