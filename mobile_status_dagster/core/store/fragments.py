"""SQL fragments that several store modules share."""

from __future__ import annotations

from typing import Literal

Dialect = Literal["duckdb", "postgres"]
"""The SQL dialect a fragment shared by the DuckDB and PostgreSQL stores is written for."""


def in_list(expression: str, parameter: str, sql_type: str = "VARCHAR") -> str:
    """A predicate: ``expression`` is in the list bound to ``parameter`` (``$name`` or ``?``).

    Written as ``list_contains`` rather than ``IN (SELECT unnest(…))``: DuckDB turns a
    bound list into a filter it pushes into the scan, so the row groups of other sets
    or runs are skipped by their min/max statistics; the ``IN (SELECT …)`` form becomes
    a join that reads the whole table once the query also aggregates.
    """
    return f"list_contains(CAST({parameter} AS {sql_type}[]), {expression})"


def placeholder(name: str, dialect: Dialect = "duckdb") -> str:
    """The named parameter ``name``: DuckDB's ``$name``, psycopg's ``%(name)s``."""
    return f"%({name})s" if dialect == "postgres" else f"${name}"


def in_list_param(
    expression: str, name: str, dialect: Dialect = "duckdb", sql_type: str = "VARCHAR"
) -> str:
    """:func:`in_list` of the list parameter ``name``, in ``dialect``.

    PostgreSQL writes it ``expression = ANY(…)``, which an index on ``expression`` serves.
    """
    if dialect == "postgres":
        return f"{expression} = ANY(CAST({placeholder(name, dialect)} AS {sql_type}[]))"
    return in_list(expression, placeholder(name, dialect), sql_type)


def pg_identifier(quoted: str) -> str:
    """A quoted identifier made safe in a psycopg query with parameters (``%`` doubled)."""
    return quoted.replace("%", "%%")
