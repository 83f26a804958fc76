"""SQL fragments that several store modules share."""

from __future__ import annotations


def in_list(expression: str, parameter: str, sql_type: str = "VARCHAR") -> str:
    """A predicate: ``expression`` is in the list bound to ``parameter`` (``$name`` or ``?``).

    Written as ``list_contains`` rather than ``IN (SELECT unnest(…))``: DuckDB turns a
    bound list into a filter it pushes into the scan, so the row groups of other sets
    or runs are skipped by their min/max statistics; the ``IN (SELECT …)`` form becomes
    a join that reads the whole table once the query also aggregates.
    """
    return f"list_contains(CAST({parameter} AS {sql_type}[]), {expression})"
