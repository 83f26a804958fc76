"""Number rules: the scalar path (numbers) and the DuckDB path (store.number_sql)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import duckdb
import pandas as pd
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers.carrierdata import CARRIER_DATA

from mobile_status_dagster.core import numbers as n
from mobile_status_dagster.core.numbers import NormalizedNumber, Operator
from mobile_status_dagster.core.store.number_sql import (
    normalize_frame,
    normalized_numbers_sql,
    register_number_rules,
    sql_literal,
)

MOBILE = "13912345678"

# (raw input, expected mobile, expected reason)
CASES: list[tuple[object, str | None, str | None]] = [
    ("+86 139-1234-5678", MOBILE, None),
    ("0086 13912345678", MOBILE, None),
    ("8613912345678", MOBILE, None),
    ("86 139 1234 5678", MOBILE, None),
    ("(139) 1234 5678", MOBILE, None),
    ("139.1234.5678", MOBILE, None),
    ("139/1234/5678", MOBILE, None),
    ("139\u20101234\u20145678", MOBILE, None),
    ("13912345678.0", MOBILE, None),
    ("13912345678.000", MOBILE, None),
    ("8613912345678.0", MOBILE, None),
    ("139 1234 5678.0", MOBILE, None),
    (13912345678, MOBILE, None),
    (13912345678.0, MOBILE, None),
    (8613912345678, MOBILE, None),
    ("１３９１２３４５６７８", MOBILE, None),
    ("＋８６\u3000１３９－１２３４－５６７８", MOBILE, None),
    ("（１３９）．１２３４．５６７８", MOBILE, None),
    ("＋86 139－1234－5678", MOBILE, None),  # full-width punctuation, ASCII digits
    ("139\u00a01234\t5678\r\n", MOBILE, None),
    ("\ufeff139\u200b1234\u20095678\u202f", MOBILE, None),
    (None, None, "empty"),
    ("", None, "empty"),
    ("   ", None, "empty"),
    ("\u3000\t\u00a0\n", None, "empty"),
    (" " * 10_000, None, "empty"),
    ("abc", None, "not_digits"),
    ("😀", None, "not_digits"),
    ("139😀12345678", None, "not_digits"),
    ("---", None, "not_digits"),
    ("+", None, "not_digits"),
    ("++8613912345678", None, "not_digits"),
    ("13912345678+", None, "not_digits"),
    ("139²2345678", None, "not_digits"),  # NFKC would make this a digit
    ("١٣٩١٢٣٤٥٦٧٨", None, "not_digits"),  # Arabic-Indic digits
    ("13912345678.5", None, "wrong_length"),
    ("13912345678'; DROP TABLE numbers; --", None, "not_digits"),
    ("' OR '1'='1", None, "not_digits"),
    ("1" * 10_000 + "x", None, "not_digits"),
    ("+1 4155550100", None, "not_mainland"),
    ("+852 9123 4567", None, "not_mainland"),
    ("+8", None, "not_mainland"),
    ("+86", None, "wrong_length"),
    ("1391234567", None, "wrong_length"),
    ("139123456789", None, "wrong_length"),
    ("00861391234567", None, "wrong_length"),
    ("1" * 10_000, None, "wrong_length"),
    ("010-12345678", None, "not_mobile"),  # a Beijing landline happens to have 11 digits
    ("86139123456", None, "not_mobile"),  # '86' is only a country code on 13 digits
    ("12012345678", None, "not_mobile"),
    ("10012345678", None, "not_mobile"),
    ("14012345678", None, "unallocated"),
    ("15412345678", None, "unallocated"),
    ("14912345678", "14912345678", None),  # libphonenumber lacks 149; the contract has it
    ("+86 149-1234-5678", "14912345678", None),
]


@pytest.mark.parametrize(("raw", "mobile", "reason"), CASES)
def test_normalize_cases(raw: object, mobile: str | None, reason: str | None) -> None:
    result = n.normalize(raw)
    assert result == NormalizedNumber(mobile, reason)
    assert result.valid is (reason is None)


def test_vectorized_cases() -> None:
    frame = normalize_frame([raw for raw, _, _ in CASES])
    assert list(frame.columns) == [
        "raw",
        "mobile",
        "valid",
        "invalid_reason",
        "prefix_operator",
        "network_operator",
    ]
    assert list(frame["mobile"]) == [mobile for _, mobile, _ in CASES]
    assert list(frame["invalid_reason"]) == [reason for _, _, reason in CASES]
    assert list(frame["valid"]) == [reason is None for _, _, reason in CASES]
    assert list(frame["raw"]) == [None if raw is None else str(raw) for raw, _, _ in CASES]


def test_reasons_are_the_documented_codes() -> None:
    assert n.INVALID_REASONS == (
        "empty",
        "not_digits",
        "not_mainland",
        "wrong_length",
        "not_mobile",
        "unallocated",
    )
    assert {reason for _, _, reason in CASES} - {None} == set(n.INVALID_REASONS)


def test_whitespace_set_covers_every_unicode_space() -> None:
    spaces = {chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace()}
    assert spaces <= set(n.WHITESPACE)


def test_every_listed_character_is_handled_the_same_on_both_paths() -> None:
    inputs = [f"139{char}1234{char}5678" for char in n.WHITESPACE + n.SEPARATORS]
    fullwidth = "\u3000＋８６（１３９）－０２４８．５６７１\u3000"
    assert set(fullwidth) == set(n.FULLWIDTH_FROM)
    frame = normalize_frame([*inputs, fullwidth])
    assert list(frame["mobile"]) == [n.normalize(raw).mobile for raw in [*inputs, fullwidth]]
    assert list(frame["mobile"]) == [MOBILE] * len(inputs) + ["13902485671"]


# --- Operators ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mobile", "prefix_op", "network_op"),
    [
        ("13912345678", Operator.CM, Operator.CM),
        ("13412345678", Operator.CM, Operator.CM),
        ("18612345678", Operator.CU, Operator.CU),
        ("18912345678", Operator.CT, Operator.CT),
        ("15312345678", Operator.CT, Operator.CT),  # '8615' is CM; '86153' wins
        ("15012345678", Operator.CM, Operator.CM),
        ("19212345678", Operator.CBN, Operator.CBN),
        ("17001234567", Operator.VNO, Operator.CT),
        ("17031234567", Operator.VNO, Operator.CM),
        ("17041234567", Operator.VNO, Operator.CU),
        ("17112345678", Operator.VNO, Operator.CU),
        ("16712345678", Operator.VNO, Operator.CU),
        ("16512345678", Operator.VNO, None),  # no carrier entry for 165
        ("13491234567", Operator.CM, Operator.CM),  # no carrier entry; the contract says CM
        ("14912345678", Operator.CT, Operator.CT),  # not in libphonenumber; the contract: CT
    ],
)
def test_operators(mobile: str, prefix_op: Operator | None, network_op: Operator | None) -> None:
    assert n.normalize(mobile).valid
    assert n.prefix_operator(mobile) is prefix_op
    assert n.network_operator(mobile) is network_op
    row = normalize_frame([mobile]).iloc[0]
    assert row["prefix_operator"] == prefix_op
    assert row["network_operator"] == network_op


def test_operator_of_non_numbers_is_none() -> None:
    assert n.network_operator("") is None
    assert n.prefix_operator("12") is None
    assert n.network_operator("abcdefghijk") is None


EXPECTED_CARRIER_CODES = {
    "China Mobile": Operator.CM,
    "China Unicom": Operator.CU,
    "China Telecom": Operator.CT,
    "China Broadnet": Operator.CBN,
}
CN_CARRIERS = {key[2:]: names["en"] for key, names in CARRIER_DATA.items() if key.startswith("86")}


def libphonenumber_carrier(prefix: str) -> Operator | None:
    """The operator of libphonenumber's longest carrier prefix of ``prefix``, if any."""
    matches = [key for key in CN_CARRIERS if prefix.startswith(key)]
    return EXPECTED_CARRIER_CODES[CN_CARRIERS[max(matches, key=len)]] if matches else None


def libphonenumber_says_mobile(mobile: str) -> bool:
    return phonenumbers.number_type(phonenumbers.parse(mobile, "CN")) in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


def test_every_cn_carrier_name_maps_to_an_operator() -> None:
    assert CN_CARRIERS
    assert set(CN_CARRIERS.values()) <= set(EXPECTED_CARRIER_CODES)


def test_prefix_table_is_the_longest_prefix_expansion() -> None:
    rows = n.prefix_rows()
    prefixes = [prefix for prefix, _, _ in rows]
    assert len(prefixes) == len(set(prefixes)) == 7 * 10 ** (n.PREFIX_LENGTH - 2)
    assert all(len(prefix) == n.PREFIX_LENGTH and prefix[1] in "3456789" for prefix in prefixes)
    assert max(map(len, CN_CARRIERS)) <= n.PREFIX_LENGTH
    for prefix, prefix_op, network_op in rows:
        carrier = libphonenumber_carrier(prefix)
        contract = CONTRACT.get(prefix[:3])
        if contract is Operator.VNO:
            assert (prefix_op, network_op) == (Operator.VNO, carrier), prefix
        elif contract is not None:
            assert (prefix_op, network_op) == (contract, contract), prefix
        else:
            assert (prefix_op, network_op) == (carrier, carrier), prefix
        mobile = prefix.ljust(11, "0")
        assert n.network_operator(mobile) == network_op
        assert n.prefix_operator(mobile) == prefix_op


@pytest.mark.parametrize(
    ("serving", "mobile", "ported"),
    [
        ("CM", "13912345678", False),
        ("CU", "13912345678", True),
        ("CT", "18612345678", True),
        ("cm ", "13912345678", False),
        ("CM", "17031234567", False),  # a VNO number on China Mobile's network
        ("CT", "17031234567", True),
        ("CM", "19212345678", None),  # China Broadnet: the provider only reports CM/CU/CT
        (None, "13912345678", None),
        ("", "13912345678", None),
        ("XX", "13912345678", None),
        ("CM", "16512345678", None),  # network operator unknown
        ("CM", "abc", None),
    ],
)
def test_is_ported(serving: str | None, mobile: str, ported: bool | None) -> None:
    assert n.is_ported(serving, mobile) is ported


# --- Contract segments (provider-api.md, "Number rules") ---------------------------


def _segments(spans: str) -> list[str]:
    """``"134-136 147"`` -> ``["134", "135", "136", "147"]``."""
    out = []
    for span in spans.split():
        first, _, last = span.partition("-")
        out += [str(segment) for segment in range(int(first), int(last or first) + 1)]
    return out


# Transcribed from provider-api.md, independently of numbers.CONTRACT_SEGMENTS.
CONTRACT: dict[str, Operator] = {
    **dict.fromkeys(
        _segments("134-139 147 150-152 157-159 172 178 182-184 187 188 195 197 198"), Operator.CM
    ),
    **dict.fromkeys(_segments("130-132 145 155 156 166 175 176 185 186 196"), Operator.CU),
    **dict.fromkeys(_segments("133 149 153 173 177 180 181 189-191 193 199"), Operator.CT),
    **dict.fromkeys(_segments("192"), Operator.CBN),
    **dict.fromkeys(_segments("162 165 167 170 171"), Operator.VNO),
}
TAILS = ("0000000", "1234567", "9999999")


def segment_numbers(segment: str) -> list[str]:
    """Numbers on ``segment``: every 4th digit, each with every tail in ``TAILS``."""
    return [f"{segment}{digit}{tail}" for digit in "0123456789" for tail in TAILS]


def decorated(mobile: str) -> str:
    """``mobile`` as typed by a person, so it cannot take normalize's shortcut."""
    return f"+86 {mobile[:3]}-{mobile[3:7]}-{mobile[7:]}"


def contract_network(mobile: str) -> Operator | None:
    """The network operator the contract implies (libphonenumber's host for a VNO)."""
    operator = CONTRACT[mobile[:3]]
    return libphonenumber_carrier(mobile) if operator is Operator.VNO else operator


CONTRACT_NUMBERS = [mobile for segment in CONTRACT for mobile in segment_numbers(segment)]
OTHER_SEGMENTS = [str(s) for s in range(130, 200) if str(s) not in CONTRACT]


def test_contract_table_is_the_provider_api_list() -> None:
    assert len(CONTRACT) == 23 + 12 + 12 + 1 + 5
    assert dict(n.CONTRACT_SEGMENTS) == CONTRACT
    assert n.VIRTUAL_OPERATOR_SEGMENTS == ("162", "165", "167", "170", "171")
    assert all(re.fullmatch(r"1[3-9][0-9]", segment) for segment in CONTRACT)
    assert {"140", "141", "142", "143", "144", "146", "148"} <= set(OTHER_SEGMENTS)


@pytest.mark.parametrize(("segment", "operator"), sorted(CONTRACT.items()), ids=sorted(CONTRACT))
def test_contract_segment_is_valid_with_the_contract_operator(
    segment: str, operator: Operator
) -> None:
    for mobile in segment_numbers(segment):
        assert n.normalize(mobile) == NormalizedNumber(mobile, None)
        assert n.normalize(decorated(mobile)) == NormalizedNumber(mobile, None)
        assert n.normalize(int(mobile)) == NormalizedNumber(mobile, None)
        assert n.prefix_operator(mobile) is operator, mobile
        assert n.network_operator(mobile) is contract_network(mobile), mobile


def test_contract_segments_on_the_sql_path_match_the_scalar_path() -> None:
    raws = [*CONTRACT_NUMBERS, *map(decorated, CONTRACT_NUMBERS)]
    frame = normalize_frame(raws)
    expected = [
        (mobile, True, None, CONTRACT[mobile[:3]], contract_network(mobile))
        for mobile in CONTRACT_NUMBERS
    ] * 2
    actual = list(
        frame[
            ["mobile", "valid", "invalid_reason", "prefix_operator", "network_operator"]
        ].itertuples(index=False, name=None)
    )
    assert actual == expected
    for raw, row in zip(raws, actual, strict=True):
        mobile = n.normalize(raw).mobile
        assert mobile is not None
        assert row == (mobile, True, None, n.prefix_operator(mobile), n.network_operator(mobile))


def test_contract_segments_through_normalized_numbers_sql() -> None:
    with duckdb.connect() as conn:
        conn.execute("CREATE TABLE numbers (id INTEGER, raw VARCHAR)")
        conn.executemany(
            "INSERT INTO numbers VALUES (?, ?)",
            [(i, decorated(m) if i % 2 else m) for i, m in enumerate(CONTRACT_NUMBERS)],
        )
        register_number_rules(conn)
        rows = conn.execute(
            "SELECT mobile, valid, invalid_reason, prefix_operator, network_operator"
            f" FROM ({normalized_numbers_sql('numbers', 'raw')}) ORDER BY id"
        ).fetchall()
    assert rows == [
        (m, True, None, CONTRACT[m[:3]].value, contract_network(m)) for m in CONTRACT_NUMBERS
    ]


def test_149_is_valid_china_telecom_and_1349_is_china_mobile() -> None:
    for mobile in ("14900000000", "14912345678", "14999999999"):
        assert n.normalize(mobile) == NormalizedNumber(mobile, None)
        assert (n.prefix_operator(mobile), n.network_operator(mobile)) == (Operator.CT,) * 2
        assert n.is_ported("CT", mobile) is False
        assert n.is_ported("CM", mobile) is True
    for mobile in ("13490000000", "13491234567", "13499999999"):
        assert n.normalize(mobile) == NormalizedNumber(mobile, None)
        assert (n.prefix_operator(mobile), n.network_operator(mobile)) == (Operator.CM,) * 2
        assert n.is_ported("CM", mobile) is False
        assert n.is_ported("CU", mobile) is True
    frame = normalize_frame(["+86 149 1234 5678", "134-9123-4567"])
    assert list(frame["mobile"]) == ["14912345678", "13491234567"]
    assert list(frame["prefix_operator"]) == ["CT", "CM"]
    assert list(frame["network_operator"]) == ["CT", "CM"]


@pytest.mark.skipif(
    phonenumbers.__version__ != "9.0.43",
    reason="the supplement is documented for the pinned phonenumbers 9.0.43",
)
def test_the_contract_supplements_libphonenumber_exactly_where_it_lags() -> None:
    invalid, no_operator = set(), set()
    for segment, operator in CONTRACT.items():
        for mobile in segment_numbers(segment):
            if not libphonenumber_says_mobile(mobile):
                invalid.add(mobile[:4])
            if operator is not Operator.VNO and libphonenumber_carrier(mobile) is not operator:
                no_operator.add(mobile[:4])
    assert invalid == {f"149{digit}" for digit in "0123456789"}
    assert no_operator == invalid | {"1349"}
    assert all(libphonenumber_carrier(prefix) is None for prefix in no_operator)


@pytest.mark.parametrize("segment", OTHER_SEGMENTS)
def test_segments_outside_the_contract_follow_libphonenumber(segment: str) -> None:
    mobiles = segment_numbers(segment)
    frame = normalize_frame(mobiles)
    for mobile, row in zip(mobiles, frame.itertuples(index=False), strict=True):
        allocated = libphonenumber_says_mobile(mobile)
        expected = (
            NormalizedNumber(mobile, None) if allocated else NormalizedNumber(None, "unallocated")
        )
        assert n.normalize(mobile) == expected
        assert n.normalize(decorated(mobile)) == expected
        assert (row.mobile, row.invalid_reason) == (expected.mobile, expected.reason)
        carrier = libphonenumber_carrier(mobile)
        assert n.prefix_operator(mobile) is carrier
        assert n.network_operator(mobile) is carrier
        assert (row.prefix_operator, row.network_operator) == (
            (carrier,) * 2 if allocated else (None, None)
        )


# --- Masking ------------------------------------------------------------------------


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("13912345678", "139****5678"),
        (13912345678, "139****5678"),
        ("+86 139 1234 5678", "+86****5678"),
        ("1" * 10_000 + "9876", "111****9876"),
        ("12345678", "123****5678"),
        ("1234567", "*******"),
        ("abc", "***"),
        ("", ""),
        (None, "****"),
        ("139\n1234\r\n5678\n", "139****678?"),
        (_Unprintable(), "****"),
    ],
)
def test_mask(value: object, masked: str) -> None:
    assert n.mask(value) == masked


@given(st.text())
def test_mask_reveals_at_most_three_and_four_characters(value: str) -> None:
    masked = n.mask(value)
    if len(value) < 8:
        assert masked == "*" * len(value)
    else:
        assert masked[3:-4] == "****"
        assert len(masked) == 11
        for shown, original in zip(masked[:3] + masked[-4:], value[:3] + value[-4:], strict=True):
            assert shown in (original, "?")


# --- Properties ---------------------------------------------------------------------

_DIGITS = "0123456789"
_TO_FULLWIDTH = str.maketrans(_DIGITS, "０１２３４５６７８９")

_PIECES = st.one_of(
    st.sampled_from(["+86", "0086", "86", "+", "+1", ".0", ".00", "0", "13", "139", "1703", "140"]),
    st.text(alphabet=_DIGITS, min_size=1, max_size=13),
    st.sampled_from(list(n.SEPARATORS + n.WHITESPACE + n.FULLWIDTH_FROM + "²٣①\u2212_,'\"\\")),
    st.characters(codec="utf-8"),
)
MESSY = st.lists(_PIECES, max_size=8).map("".join)


@st.composite
def decorated_mobiles(draw: st.DrawFn) -> str:
    """A (mostly) 11-digit 1[3-9] number dressed up the ways real inputs are."""
    digits = draw(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
    # Mostly 11 digits; sometimes one or two short or long, to probe the length rules.
    digits = digits[: draw(st.sampled_from([11, 11, 11, 9, 10]))] + draw(
        st.sampled_from(["", "", "", "0"])
    )
    separator = draw(st.sampled_from(["", " ", "-", ".", "\u00a0", "\u2014", "\t", "－", "．"]))
    text = separator.join([digits[:3], digits[3:7], digits[7:]])
    if draw(st.booleans()):
        text = f"({text[:3]}){text[3:]}"
    prefixes = ["", "+86", "+86 ", "0086", "86", "\u3000", "+1", "＋86", "＋８６\u3000"]
    text = draw(st.sampled_from(prefixes)) + text
    if separator == "" and draw(st.booleans()):
        text += ".0"
    if draw(st.booleans()):
        text = text.translate(_TO_FULLWIDTH)
    return text


INPUTS = st.one_of(MESSY, decorated_mobiles(), st.text(), st.integers(), st.floats(), st.none())


@settings(max_examples=300)
@given(INPUTS)
def test_normalize_is_idempotent(raw: object) -> None:
    result = n.normalize(raw)
    if result.valid:
        assert result.mobile is not None
        assert n.normalize(result.mobile) == result
    else:
        assert result.mobile is None
        assert result.reason in n.INVALID_REASONS


@settings(max_examples=300)
@given(INPUTS)
def test_accepted_numbers_are_mainland_mobiles(raw: object) -> None:
    result = n.normalize(raw)
    if result.mobile is None:
        return
    assert len(result.mobile) == 11
    assert all(char in _DIGITS for char in result.mobile)
    assert result.mobile[:2] in {f"1{digit}" for digit in "3456789"}
    assert libphonenumber_says_mobile(result.mobile) or result.mobile[:3] in CONTRACT


@settings(max_examples=300)
@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_plain_numbers_are_accepted_exactly_when_libphonenumber_or_the_contract_says_so(
    digits: str,
) -> None:
    allocated = libphonenumber_says_mobile(digits) or digits[:3] in CONTRACT
    expected = (
        NormalizedNumber(digits, None) if allocated else NormalizedNumber(None, "unallocated")
    )
    assert n.normalize(digits) == expected
    assert n.normalize(f"+86 {digits}") == expected  # past the already-normalized shortcut


# Each example is one DuckDB run over a large batch; decorated numbers are weighted up so
# that enough rows get through every rule.
@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(INPUTS, decorated_mobiles()), min_size=80, max_size=160))
def test_scalar_and_vectorized_paths_agree(values: list[object]) -> None:
    frame = normalize_frame(values)
    assert len(frame) == len(values)
    for raw, row in zip(values, frame.itertuples(index=False), strict=True):
        expected = n.normalize(raw)
        assert (row.mobile, row.invalid_reason, row.valid) == (
            expected.mobile,
            expected.reason,
            expected.valid,
        ), raw
        if expected.mobile is None:
            assert (row.prefix_operator, row.network_operator) == (None, None)
        else:
            assert row.prefix_operator == n.prefix_operator(expected.mobile)
            assert row.network_operator == n.network_operator(expected.mobile)


# --- SQL ----------------------------------------------------------------------------


@given(st.text())
def test_sql_literal_round_trips(value: str) -> None:
    with duckdb.connect() as conn:
        assert conn.execute(f"SELECT {sql_literal(value)}").fetchone() == (value,)


def test_sql_over_a_table_keeps_its_columns(tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / "numbers.duckdb"))
    conn.execute(
        'CREATE TABLE "my ""numbers""" (id INTEGER, "raw ""no""" VARCHAR, "Mobile" VARCHAR)'
    )
    conn.execute(
        'INSERT INTO "my ""numbers""" VALUES'
        " (1, '+86 139-1234-5678', 'old'), (2, 'abc', 'old'), (3, NULL, NULL)"
    )
    register_number_rules(conn)
    register_number_rules(conn)  # idempotent
    sql = normalized_numbers_sql('"my ""numbers"""', 'raw "no"')
    result = conn.execute(f"SELECT * FROM ({sql}) ORDER BY id")
    assert [column[0] for column in result.description] == [
        "id",
        'raw "no"',
        "mobile",
        "valid",
        "invalid_reason",
        "prefix_operator",
        "network_operator",
    ]
    assert result.fetchall() == [
        (1, "+86 139-1234-5678", MOBILE, True, None, "CM", "CM"),
        (2, "abc", None, False, "not_digits", None, None),
        (3, None, None, False, "empty", None, None),
    ]
    conn.close()

    # TEMP tables work on a read-only connection too.
    with duckdb.connect(str(tmp_path / "numbers.duckdb"), read_only=True) as read_only:
        register_number_rules(read_only)
        assert read_only.execute(f"SELECT count(*) FROM ({sql}) WHERE valid").fetchone() == (1,)


def test_sql_over_a_subquery_with_typed_columns() -> None:
    with duckdb.connect() as conn:
        register_number_rules(conn)
        sql = normalized_numbers_sql(
            "(SELECT 13912345678::BIGINT AS n UNION ALL SELECT 13912345678.0::DOUBLE)", "n"
        )
        assert conn.execute(f"SELECT mobile FROM ({sql})").fetchall() == [(MOBILE,), (MOBILE,)]


def test_normalize_frame_inputs() -> None:
    series = pd.Series(["13912345678", None, "abc"], dtype="string")
    frame = normalize_frame(series)
    assert list(frame["invalid_reason"]) == [None, "empty", "not_digits"]
    assert list(normalize_frame(iter(["+8613912345678"]))["mobile"]) == [MOBILE]
    # A lone surrogate (from errors="surrogateescape") is not UTF-8 but still an answer.
    assert list(normalize_frame(["139\udcff"])["invalid_reason"]) == ["not_digits"]
    empty = normalize_frame([])
    assert len(empty) == 0
    assert "mobile" in empty.columns


def test_raw_column_named_like_an_output_is_refused() -> None:
    with pytest.raises(ValueError, match="clashes with an output column"):
        normalized_numbers_sql('"number_sets"', "Mobile")
