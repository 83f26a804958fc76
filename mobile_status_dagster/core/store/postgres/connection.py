"""Connections to a PostgreSQL store: the target URL, kept secret, and short sessions.

The password comes from the URL, ``PGPASSWORD`` (libpq reads it) or a Dagster
``EnvVar`` holding the whole URL. It never appears in ``str()``/``repr()`` of a
:class:`PostgresTarget`, in an error this module raises, or in a log line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import psycopg.conninfo

from mobile_status_dagster.core.errors import ConfigurationError, DatabaseOpenError
from mobile_status_dagster.core.store.number_sql import quote_identifier

SCHEMES = ("postgresql", "postgres")
MASKED = "********"

#: TCP keepalives, so the server ends the session of a machine that vanished (and with it
#: the provider turn's advisory lock) within about half a minute.
_SESSION_OPTIONS: dict[str, str | int | None] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

PgConnect = Callable[[], AbstractContextManager[psycopg.Connection[tuple[object, ...]]]]
"""A factory: ``with connect() as conn: ...`` opens, and always closes, a session."""


def is_postgres_url(value: str) -> bool:
    """Whether ``value`` names a PostgreSQL store (``postgresql://…`` or ``postgres://…``)."""
    return value.split("://", 1)[0].lower() in SCHEMES and "://" in value


@dataclass(frozen=True)
class PostgresTarget:
    """A PostgreSQL database to keep the library's state in.

    Args:
        url: ``postgresql://user[:password]@host[:port]/dbname[?options]`` (libpq's URI).
        schema: the schema of the library's tables (and the default source table);
            ``None`` uses the database's default (``search_path``).
    """

    url: str = field(repr=False)
    schema: str | None = None

    def __post_init__(self) -> None:
        if not is_postgres_url(self.url):
            raise ConfigurationError("store", f"{self.shown} is not a postgresql:// URL")
        parts = urlsplit(self.url)
        if not parts.path.strip("/"):
            raise ConfigurationError("store", f"{self.shown} names no database (…/dbname)")
        if self.schema is not None and not self.schema.strip():
            raise ConfigurationError("store_schema", "is empty")

    @property
    def password(self) -> str | None:
        """The password in the URL, if any (for masking)."""
        return unquote(urlsplit(self.url).password or "") or None

    @property
    def shown(self) -> str:
        """The URL with its password masked: safe to print."""
        try:
            parts = urlsplit(self.url)
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
        except ValueError:
            return "postgresql://(unreadable URL)"
        user = parts.username or ""
        credentials = f"{user}:{MASKED}@" if parts.password else (f"{user}@" if user else "")
        return urlunsplit((parts.scheme, credentials + host, parts.path, "", ""))

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        schema = "" if self.schema is None else f", schema={self.schema!r}"
        return f"PostgresTarget({self.shown!r}{schema})"

    def scrub(self, text: str) -> str:
        """``text`` with the URL and the password masked (for error messages)."""
        text = text.replace(self.url, self.shown)
        password = self.password
        return text.replace(password, MASKED) if password else text

    def open(self) -> psycopg.Connection[tuple[object, ...]]:
        """A new session in autocommit mode (write in ``with conn.transaction():``), its
        ``search_path`` set to :attr:`schema` if configured.

        Raises:
            DatabaseOpenError: the server cannot be reached or refuses the login (the
                message names the masked URL, never the password).
        """
        try:
            conninfo = psycopg.conninfo.make_conninfo(self.url, **_SESSION_OPTIONS)
            conn = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as error:
            reason = self.scrub(str(error).strip().splitlines()[0] if str(error) else "")
            raise DatabaseOpenError(
                f"cannot open the PostgreSQL store {self.shown} ({type(error).__name__}: {reason})"
            ) from None
        if self.schema is not None:
            quoted = quote_identifier(self.schema)
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            conn.execute(f"SET search_path TO {quoted}")
        return conn

    def connect(self) -> PgConnect:
        """A :data:`PgConnect`: each session is closed when its block ends."""

        @contextlib.contextmanager
        def session() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
            conn = self.open()
            try:
                yield conn
            finally:
                conn.close()

        return session
