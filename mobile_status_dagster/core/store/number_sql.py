"""The number rules of :mod:`mobile_status_dagster.core.numbers` as vectorized DuckDB SQL.

Every pattern, character set and length here comes from a constant in ``numbers``, so
the SQL path and the scalar path give the same answer for every input. The SQL is a
chain of CTEs, one rule per CTE, in the order ``numbers.normalize`` applies them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import duckdb

if TYPE_CHECKING:  # pandas is imported where a frame is made: a CLI start saves 0.4 s
    import pandas as pd

from mobile_status_dagster.core import numbers as n

__all__ = [
    "OUTPUT_COLUMNS",
    "PREFIX_TABLE",
    "normalize_frame",
    "normalized_numbers_sql",
    "quote_identifier",
    "register_number_rules",
    "sql_literal",
]

PREFIX_TABLE: Final = "mobile_status_number_prefixes"
"""Name of the TEMP table created by :func:`register_number_rules`."""

# The columns normalized_numbers_sql adds; same-named source columns are replaced.
OUTPUT_COLUMNS: Final[tuple[str, ...]] = (
    "mobile",
    "valid",
    "invalid_reason",
    "prefix_operator",
    "network_operator",
)

# Working columns, dropped from the result. Source columns must not use these names.
_TEXT: Final = "__ms_text"
_REASON: Final = "__ms_reason"
_PREFIX_OPERATOR: Final = "__ms_prefix_operator"
_NETWORK_OPERATOR: Final = "__ms_network_operator"
_ORDINAL: Final = "__ms_ordinal"
_CLEAN: Final = "__ms_clean"


def quote_identifier(name: str) -> str:
    """Quote a DuckDB identifier: double quotes, embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    """Render a constant string as a DuckDB expression.

    Single quotes are doubled; non-printable characters (tabs, NBSP, zero-width
    spaces...) become ``chr(n)`` so the generated SQL is readable and log-safe.
    """
    parts: list[str] = []
    run = ""
    for char in value:
        if char.isprintable():
            run += char
            continue
        if run:
            parts.append("'" + run.replace("'", "''") + "'")
            run = ""
        parts.append(f"chr({ord(char)})")
    if run or not parts:
        parts.append("'" + run.replace("'", "''") + "'")
    return parts[0] if len(parts) == 1 else "(" + " || ".join(parts) + ")"


_PREFIX_TABLE_REF: Final = f"temp.main.{quote_identifier(PREFIX_TABLE)}"


def register_number_rules(conn: duckdb.DuckDBPyConnection) -> None:
    """Create (idempotently) a TEMP table with the prefix rows in this connection.

    The table, ``temp.main.mobile_status_number_prefixes(prefix, prefix_operator,
    network_operator)``, is what :func:`normalized_numbers_sql` joins against; it is
    rebuilt from :func:`mobile_status_dagster.core.numbers.prefix_rows` on every call. TEMP
    tables also work on read-only connections.
    """
    rows = n.prefix_rows()
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {quote_identifier(PREFIX_TABLE)} AS SELECT"
        " unnest($prefixes::VARCHAR[]) AS prefix,"
        " unnest($prefix_operators::VARCHAR[]) AS prefix_operator,"
        " unnest($network_operators::VARCHAR[]) AS network_operator",
        {
            "prefixes": [row[0] for row in rows],
            "prefix_operators": [row[1] for row in rows],
            "network_operators": [row[2] for row in rows],
        },
    )


def _char_class(chars: str) -> str:
    """A SQL literal for the RE2 character class matching exactly ``chars``."""
    return sql_literal("[" + "".join("\\" + c if c in "\\[]^-" else c for c in chars) + "]")


def _first_reason(condition: str, reason: str) -> dict[str, str]:
    """Set ``reason`` where ``condition`` holds, on rows that have no reason yet."""
    return {_REASON: f"coalesce({_REASON}, CASE WHEN {condition} THEN {sql_literal(reason)} END)"}


def _cleaning_steps() -> list[tuple[str, dict[str, str]]]:
    """(CTE name, new value of each column it changes), one per rule before the
    allocation check, in the order ``normalize`` applies them.

    None of them changes a text that already has the shape of a mobile number
    (``numbers.MOBILE_PATTERN``: eleven digits, ``1[3-9]`` first): it has no full-width
    character, whitespace, separator, float suffix or country code, and the right
    length. The SQL skips them for such a text (they are regular expressions, and most
    rows are such texts); :func:`_allocation_step` runs on every row.
    """
    t = _TEXT
    plus_cc = n.INTERNATIONAL_PREFIX + n.COUNTRY_CODE
    dial_cc = n.INTERNATIONAL_DIAL_PREFIX + n.COUNTRY_CODE
    cc = n.COUNTRY_CODE
    spreadsheet = sql_literal(n.SPREADSHEET_FLOAT_PATTERN)

    def full_match(pattern: str) -> str:
        return f"regexp_full_match({t}, {sql_literal(pattern)})"

    def starts(prefix: str) -> str:
        return f"starts_with({t}, {sql_literal(prefix)})"

    def strip(prefix: str) -> str:
        return f"substr({t}, {len(prefix) + 1})"

    return [
        # translate() is slow on DuckDB (~0.6 µs a row), so it runs only on the rare rows
        # that hold a full-width character.
        (
            "__ms_fullwidth",
            {
                t: f"CASE WHEN regexp_matches({t}, {_char_class(n.FULLWIDTH_FROM)})"
                f" THEN translate({t}, {sql_literal(n.FULLWIDTH_FROM)},"
                f" {sql_literal(n.FULLWIDTH_TO)}) ELSE {t} END"
            },
        ),
        (
            "__ms_whitespace",
            {t: f"regexp_replace({t}, {_char_class(n.WHITESPACE)}, '', 'g')"},
        ),
        ("__ms_empty", _first_reason(f"{t} IS NULL OR {t} = ''", n.REASON_EMPTY)),
        (
            "__ms_spreadsheet",
            {
                t: f"CASE WHEN {full_match(n.SPREADSHEET_FLOAT_PATTERN)}"
                f" THEN regexp_extract({t}, {spreadsheet}, 1) ELSE {t} END"
            },
        ),
        (
            "__ms_separators",
            {t: f"regexp_replace({t}, {_char_class(n.SEPARATORS)}, '', 'g')"},
        ),
        (
            "__ms_digits",
            _first_reason(f"NOT {full_match(n.DIGITS_PATTERN)}", n.REASON_NOT_DIGITS),
        ),
        (
            "__ms_country_code",
            {
                t: f"CASE WHEN {starts(n.INTERNATIONAL_PREFIX)}"
                f" THEN CASE WHEN {starts(plus_cc)} THEN {strip(plus_cc)} ELSE {t} END"
                f" WHEN {starts(dial_cc)} THEN {strip(dial_cc)}"
                f" WHEN {starts(cc)} AND length({t}) = {len(cc) + n.MOBILE_LENGTH}"
                f" THEN {strip(cc)} ELSE {t} END",
                **_first_reason(
                    f"{starts(n.INTERNATIONAL_PREFIX)} AND NOT {starts(plus_cc)}",
                    n.REASON_NOT_MAINLAND,
                ),
            },
        ),
        (
            "__ms_length",
            _first_reason(f"length({t}) <> {n.MOBILE_LENGTH}", n.REASON_WRONG_LENGTH),
        ),
        (
            "__ms_mobile",
            _first_reason(f"NOT {full_match(n.MOBILE_PATTERN)}", n.REASON_NOT_MOBILE),
        ),
    ]


def _allocation_step() -> tuple[str, dict[str, str]]:
    """The last rule, which every row goes through: the number is an allocated segment."""
    pattern = sql_literal(n.ALLOCATED_MOBILE_PATTERN)
    return (
        "__ms_allocated",
        _first_reason(f"NOT regexp_full_match({_TEXT}, {pattern})", n.REASON_UNALLOCATED),
    )


def normalized_numbers_sql(source: str, raw_column: str) -> str:
    """A SELECT over ``source`` that normalizes ``raw_column`` the way ``normalize`` does.

    ``source`` is a relation, inserted as given: a quoted table name or ``(subquery)``.
    ``raw_column`` is quoted here. The result has all of ``source``'s columns plus
    ``mobile`` (VARCHAR, NULL unless valid), ``valid`` (BOOLEAN), ``invalid_reason``
    (VARCHAR, one of ``numbers.INVALID_REASONS``), ``prefix_operator`` and
    ``network_operator`` (VARCHAR ``Operator`` codes or NULL). Source columns with those
    five names (case-insensitively) are replaced; names starting with ``__ms_`` are
    reserved. Non-VARCHAR raw columns are ``CAST(... AS VARCHAR)`` first. Call
    :func:`register_number_rules` on the connection before running it.

    Example::

        register_number_rules(conn)
        conn.sql(normalized_numbers_sql('"number_sets"', "raw_number"))

    Raises:
        ValueError: ``raw_column`` has the name of an output column (e.g. ``mobile``);
            select it under another name (``mobile AS mobile_raw``) first.
    """
    if raw_column.lower() in OUTPUT_COLUMNS:
        raise ValueError(
            f"raw column {raw_column!r} clashes with an output column; select it as another name"
        )
    raw_text = f"CAST({quote_identifier(raw_column)} AS VARCHAR)"
    ctes = [
        (
            "__ms_input",
            f"SELECT *, {raw_text} AS {_TEXT}, CAST(NULL AS VARCHAR) AS {_REASON},"
            f" regexp_full_match({raw_text}, {sql_literal(n.MOBILE_PATTERN)}) AS {_CLEAN}"
            f" FROM {source} AS __ms_source",
        )
    ]

    def step(name: str, values: dict[str, str]) -> tuple[str, str]:
        replacements = ", ".join(f"{value} AS {column}" for column, value in values.items())
        return name, f"SELECT * REPLACE ({replacements}) FROM {ctes[-1][0]}"

    for name, values in _cleaning_steps():
        skipped = {c: f"CASE WHEN {_CLEAN} THEN {c} ELSE {v} END" for c, v in values.items()}
        ctes.append(step(name, skipped))
    ctes.append(step(*_allocation_step()))
    ctes.append(
        (
            "__ms_operators",
            f"SELECT __ms_rows.*, __ms_prefixes.prefix_operator AS {_PREFIX_OPERATOR},"
            f" __ms_prefixes.network_operator AS {_NETWORK_OPERATOR}"
            f" FROM {ctes[-1][0]} AS __ms_rows LEFT JOIN {_PREFIX_TABLE_REF} AS __ms_prefixes"
            f" ON __ms_rows.{_REASON} IS NULL"
            f" AND __ms_prefixes.prefix = substr(__ms_rows.{_TEXT}, 1, {n.PREFIX_LENGTH})",
        )
    )
    hidden = ", ".join(
        sql_literal(name)
        for name in (*OUTPUT_COLUMNS, _TEXT, _REASON, _CLEAN, _PREFIX_OPERATOR, _NETWORK_OPERATOR)
    )
    body = ",\n".join(f"{name} AS (\n    {select}\n)" for name, select in ctes)
    return (
        f"WITH {body}\n"
        f"SELECT COLUMNS(lambda c: lower(c) NOT IN ({hidden})),\n"
        f"    CASE WHEN {_REASON} IS NULL THEN {_TEXT} END AS mobile,\n"
        f"    {_REASON} IS NULL AS valid,\n"
        f"    {_REASON} AS invalid_reason,\n"
        f"    {_PREFIX_OPERATOR} AS prefix_operator,\n"
        f"    {_NETWORK_OPERATOR} AS network_operator\n"
        f"FROM {ctes[-1][0]}"
    )


def _texts(values: Iterable[object] | pd.Series) -> list[str | None]:
    """Inputs as the scalar path sees them: ``None`` stays ``None``, others ``str(x)``."""
    import pandas as pd

    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.StringDtype):
        # A string-dtype Series stores missing values as NaN/NA: those are None.
        return [
            None if missing else str(value)
            for value, missing in zip(values, values.isna(), strict=True)
        ]
    return [
        None if value is None else value if isinstance(value, str) else str(value)
        for value in values
    ]


def _utf8_safe(text: str | None) -> str | None:
    # A lone surrogate (e.g. from errors="surrogateescape") is not UTF-8 and DuckDB
    # rejects it. Such a string fails rule F either way, so U+FFFD keeps the answer.
    if text is None:
        return None
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def normalize_frame(values: Iterable[object] | pd.Series) -> pd.DataFrame:
    """Normalize many values at once, in an in-memory DuckDB (the vectorized path).

    Returns one row per input, in input order, with columns ``raw`` (the input as text,
    ``str(x)``, or None), ``mobile``, ``valid``, ``invalid_reason``, ``prefix_operator``
    and ``network_operator``; text columns hold ``str`` or ``None``. Each row equals
    what ``numbers.normalize`` and the operator functions give for the same input.
    A string-dtype Series's missing values (NaN/NA) count as ``None``.
    """
    texts = _texts(values)
    try:
        return _normalize_texts(texts)
    except duckdb.InvalidInputException:
        return _normalize_texts([_utf8_safe(text) for text in texts])


def _normalize_texts(texts: list[str | None]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame({_ORDINAL: range(len(texts)), "raw": pd.Series(texts, dtype=object)})
    with duckdb.connect() as conn:
        register_number_rules(conn)
        conn.register("__ms_frame", frame)
        result = conn.execute(
            "SELECT raw, mobile, valid, invalid_reason, prefix_operator, network_operator"
            f" FROM ({normalized_numbers_sql('__ms_frame', 'raw')}) ORDER BY {_ORDINAL}"
        ).df()
    for column in ("raw", "mobile", "invalid_reason", "prefix_operator", "network_operator"):
        result[column] = result[column].astype(object).where(result[column].notna(), None)
    result["valid"] = result["valid"].astype(bool)
    return result
