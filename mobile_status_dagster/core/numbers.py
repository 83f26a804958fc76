"""Mainland-China mobile number rules: normalization, operators, masking.

Pure functions over strings; no HTTP, DuckDB or Dagster. The constants below are the
single source of truth for both this scalar path and the vectorized DuckDB path in
:mod:`mobile_status_dagster.core.store.number_sql`, which must give identical answers.

Segment data comes from Google's libphonenumber (the ``phonenumbers`` package), read
once at import, supplemented by the provider contract's segment list
(:data:`CONTRACT_SEGMENTS`), which wins where the two disagree.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import phonenumbers
from phonenumbers.carrierdata import CARRIER_DATA

from mobile_status_dagster.core.status import SERVING_OPERATORS

__all__ = [
    "CONTRACT_SEGMENTS",
    "INVALID_REASONS",
    "NormalizedNumber",
    "Operator",
    "is_ported",
    "mask",
    "network_operator",
    "normalize",
    "prefix_operator",
]
"""The public number rules. The patterns and character sets below are module constants,
shared with :mod:`mobile_status_dagster.core.store.number_sql`, not API."""

# --- Invalid reasons, in the order the rules are applied -------------------------------

REASON_EMPTY: Final = "empty"
REASON_NOT_DIGITS: Final = "not_digits"
REASON_NOT_MAINLAND: Final = "not_mainland"
REASON_WRONG_LENGTH: Final = "wrong_length"
REASON_NOT_MOBILE: Final = "not_mobile"
REASON_UNALLOCATED: Final = "unallocated"

INVALID_REASONS: Final[tuple[str, ...]] = (
    REASON_EMPTY,
    REASON_NOT_DIGITS,
    REASON_NOT_MAINLAND,
    REASON_WRONG_LENGTH,
    REASON_NOT_MOBILE,
    REASON_UNALLOCATED,
)

# --- Normalization constants ------------------------------------------------------------

# Step A. An explicit table rather than NFKC, which would also turn '²' or '①' into digits.
FULLWIDTH_FROM: Final = "０１２３４５６７８９＋－（）．\u3000"
FULLWIDTH_TO: Final = "0123456789+-(). "

# Step B. Every character for which str.isspace() is true, plus the invisible ones that
# arrive in copy-pasted and CSV data (zero-width space/joiners, word joiner, BOM). Listed
# explicitly because Python's and RE2's `\s` differ.
WHITESPACE: Final = (
    " \t\n\v\f\r"
    "\x1c\x1d\x1e\x1f\x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
    "\u200b\u200c\u200d\u2060\ufeff"
)

# Step D. A number that went through a spreadsheet: "13912345678.0". Group 1 is kept.
SPREADSHEET_FLOAT_PATTERN: Final = r"(\+?[0-9]+)\.0+"

# Step E. Separators people type between digit groups, including the Unicode dashes
# U+2010..U+2015 (hyphen, non-breaking hyphen, figure dash, en/em dash, horizontal bar).
SEPARATORS: Final = "-.()/\u2010\u2011\u2012\u2013\u2014\u2015"

# Step F. Only ASCII digits are digits.
DIGITS_PATTERN: Final = r"\+?[0-9]+"

# Step G. "+86…", "0086…", or "86…" when the whole string is 13 digits long.
INTERNATIONAL_PREFIX: Final = "+"
INTERNATIONAL_DIAL_PREFIX: Final = "00"
COUNTRY_CODE: Final = "86"

# Steps H and I.
MOBILE_LENGTH: Final = 11
MOBILE_PATTERN: Final = r"1[3-9][0-9]{9}"


# --- Segments ---------------------------------------------------------------------------


class Operator(enum.StrEnum):
    """Chinese mobile operators, by the codes the provider uses."""

    CM = "CM"  # China Mobile
    CU = "CU"  # China Unicom
    CT = "CT"  # China Telecom
    CBN = "CBN"  # China Broadnet
    VNO = "VNO"  # a virtual network operator (MVNO)


def _segments(operator: Operator, segments: str) -> dict[str, Operator]:
    return dict.fromkeys(segments.split(), operator)


# The provider contract's segment list: provider-api.md, "Number rules", which follows
# MIIT's (工信部) number-segment allocation. A number on one of these 3-digit segments is
# allocated, with this prefix operator, whatever libphonenumber says; every other segment
# is left to libphonenumber, the maintained source. This is the supplement that fills in
# where libphonenumber lags: at the pinned phonenumbers 9.0.43, 149 is missing from the
# CN mobile pattern and 1349 has no carrier entry. Virtual-operator segments map to VNO;
# their host network still comes from libphonenumber (see network_operator).
CONTRACT_SEGMENTS: Final[Mapping[str, Operator]] = MappingProxyType(
    _segments(
        Operator.CM,
        "134 135 136 137 138 139 147 150 151 152 157 158 159 172 178 182 183 184 187 188"
        " 195 197 198",
    )
    | _segments(Operator.CU, "130 131 132 145 155 156 166 175 176 185 186 196")
    | _segments(Operator.CT, "133 149 153 173 177 180 181 189 190 191 193 199")
    | _segments(Operator.CBN, "192")
    | _segments(Operator.VNO, "162 165 167 170 171")
)

# The MIIT virtual-operator segments, from the contract table above.
VIRTUAL_OPERATOR_SEGMENTS: Final[tuple[str, ...]] = tuple(
    segment for segment, operator in CONTRACT_SEGMENTS.items() if operator is Operator.VNO
)


def _libphonenumber_mobile_pattern() -> str:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("CN")
    pattern = None
    if metadata is not None and metadata.mobile is not None:
        pattern = metadata.mobile.national_number_pattern
    if not pattern:
        raise RuntimeError("phonenumbers has no CN mobile national-number pattern")
    return pattern


# Step J. Allocated mobile ranges: libphonenumber's, plus every contract segment. Uses
# only constructs RE2 shares with Python's `re` (compiled with re.ASCII below so that
# `\d` means [0-9] in both). ALLOCATED_MOBILE_PATTERN is what both paths test.
LIBPHONENUMBER_MOBILE_PATTERN: Final = _libphonenumber_mobile_pattern()
_CONTRACT_SEGMENT_LENGTH: Final = 3
ALLOCATED_MOBILE_PATTERN: Final = (
    f"(?:(?:{LIBPHONENUMBER_MOBILE_PATTERN})"
    f"|(?:{'|'.join(sorted(CONTRACT_SEGMENTS))})"
    f"[0-9]{{{MOBILE_LENGTH - _CONTRACT_SEGMENT_LENGTH}}})"
)

_FULLWIDTH_TABLE: Final = str.maketrans(FULLWIDTH_FROM, FULLWIDTH_TO)
_WHITESPACE_TABLE: Final = str.maketrans("", "", WHITESPACE)
_SEPARATOR_TABLE: Final = str.maketrans("", "", SEPARATORS)
_SPREADSHEET_FLOAT_RE: Final = re.compile(SPREADSHEET_FLOAT_PATTERN, re.ASCII)
_DIGITS_RE: Final = re.compile(DIGITS_PATTERN, re.ASCII)
_MOBILE_RE: Final = re.compile(MOBILE_PATTERN, re.ASCII)
_ALLOCATED_MOBILE_RE: Final = re.compile(ALLOCATED_MOBILE_PATTERN, re.ASCII)
_PLUS_COUNTRY_CODE: Final = INTERNATIONAL_PREFIX + COUNTRY_CODE
_DIAL_COUNTRY_CODE: Final = INTERNATIONAL_DIAL_PREFIX + COUNTRY_CODE
_NATIONAL_WITH_COUNTRY_CODE_LENGTH: Final = len(COUNTRY_CODE) + MOBILE_LENGTH


@dataclass(frozen=True, slots=True)
class NormalizedNumber:
    """The outcome of :func:`normalize`.

    ``mobile`` is the 11-digit national number when valid, else ``None``; ``reason`` is
    ``None`` when valid, else one of :data:`INVALID_REASONS`.
    """

    mobile: str | None
    reason: str | None

    @property
    def valid(self) -> bool:
        """True when the input is an allocated mainland mobile number."""
        return self.reason is None


_INVALID: Final = {reason: NormalizedNumber(None, reason) for reason in INVALID_REASONS}


def normalize(raw: object) -> NormalizedNumber:
    """Normalize one raw input to an 11-digit mainland mobile number, or say why not.

    ``raw`` may be anything: ``None`` is empty, other non-strings are ``str(raw)``, so
    ``13912345678`` and the spreadsheet float ``13912345678.0`` are both accepted.

    >>> normalize("+86 139-1234-5678")
    NormalizedNumber(mobile='13912345678', reason=None)
    >>> normalize("010-12345678").reason
    'not_mobile'
    """
    if raw is None:
        return _INVALID[REASON_EMPTY]
    if type(raw) is str and len(raw) == MOBILE_LENGTH and _ALLOCATED_MOBILE_RE.fullmatch(raw):
        return NormalizedNumber(raw, None)  # already normalized (the common case): a shortcut
    text = (raw if isinstance(raw, str) else str(raw)).translate(_FULLWIDTH_TABLE)
    text = text.translate(_WHITESPACE_TABLE)
    if not text:
        return _INVALID[REASON_EMPTY]
    spreadsheet = _SPREADSHEET_FLOAT_RE.fullmatch(text)
    if spreadsheet is not None:
        text = spreadsheet.group(1)
    text = text.translate(_SEPARATOR_TABLE)
    if _DIGITS_RE.fullmatch(text) is None:
        return _INVALID[REASON_NOT_DIGITS]
    if text.startswith(INTERNATIONAL_PREFIX):
        if not text.startswith(_PLUS_COUNTRY_CODE):
            return _INVALID[REASON_NOT_MAINLAND]
        text = text[len(_PLUS_COUNTRY_CODE) :]
    elif text.startswith(_DIAL_COUNTRY_CODE):
        text = text[len(_DIAL_COUNTRY_CODE) :]
    elif text.startswith(COUNTRY_CODE) and len(text) == _NATIONAL_WITH_COUNTRY_CODE_LENGTH:
        text = text[len(COUNTRY_CODE) :]
    if len(text) != MOBILE_LENGTH:
        return _INVALID[REASON_WRONG_LENGTH]
    if _MOBILE_RE.fullmatch(text) is None:
        return _INVALID[REASON_NOT_MOBILE]
    if _ALLOCATED_MOBILE_RE.fullmatch(text) is None:
        return _INVALID[REASON_UNALLOCATED]
    return NormalizedNumber(text, None)


# --- Operators --------------------------------------------------------------------------


_CARRIER_NAMES: Final[dict[str, Operator]] = {
    "China Mobile": Operator.CM,
    "China Unicom": Operator.CU,
    "China Telecom": Operator.CT,
    "China Broadnet": Operator.CBN,
}


def _cn_carriers() -> dict[str, str]:
    """National-number prefix -> English carrier name, from libphonenumber."""
    carriers = {}
    for key, names in CARRIER_DATA.items():
        # Calling codes are prefix-free, so every key starting with "86" is China's.
        if key.startswith(COUNTRY_CODE) and "en" in names:
            carriers[key[len(COUNTRY_CODE) :]] = names["en"]
    return carriers


_CN_CARRIERS: Final = _cn_carriers()

# Every prefix is expanded to this many national digits, so that a lookup is one dict
# get (or one equi-join in SQL) instead of a longest-prefix search.
PREFIX_LENGTH: Final = max(max(map(len, _CN_CARRIERS), default=0), _CONTRACT_SEGMENT_LENGTH)


def _build_prefix_table() -> dict[str, tuple[Operator | None, Operator | None]]:
    """Fixed-length prefix -> (prefix operator, network operator), for every 1[3-9]….

    On a contract segment the contract's operator wins, except that a virtual segment's
    network operator stays libphonenumber's host network; elsewhere libphonenumber's
    longest matching carrier prefix decides both.
    """
    scale = 10 ** (PREFIX_LENGTH - 2)
    table: dict[str, tuple[Operator | None, Operator | None]] = {}
    for number in range(13 * scale, 20 * scale):
        prefix = str(number)
        network = None
        for length in range(PREFIX_LENGTH, 0, -1):  # longest matching prefix wins
            name = _CN_CARRIERS.get(prefix[:length])
            if name is not None:
                network = _CARRIER_NAMES.get(name)
                break
        contract = CONTRACT_SEGMENTS.get(prefix[:_CONTRACT_SEGMENT_LENGTH])
        if contract is Operator.VNO:
            table[prefix] = (Operator.VNO, network)
        elif contract is not None:
            table[prefix] = (contract, contract)
        else:
            table[prefix] = (network, network)
    return table


_PREFIX_TABLE: Final = _build_prefix_table()


def prefix_rows() -> list[tuple[str, str | None, str | None]]:
    """The expanded prefix table: ``(prefix, prefix_operator, network_operator)`` rows.

    One row per :data:`PREFIX_LENGTH`-digit prefix from ``13…`` to ``19…``; the operators
    are :class:`Operator` codes as plain strings, or ``None`` when unknown.
    """
    return [
        (prefix, None if po is None else po.value, None if no is None else no.value)
        for prefix, (po, no) in _PREFIX_TABLE.items()
    ]


def network_operator(mobile: str) -> Operator | None:
    """The operator whose network the number's segment is on, or ``None``.

    On a non-virtual :data:`CONTRACT_SEGMENTS` segment this is the contract's operator;
    on a virtual-operator segment it is libphonenumber's host network (e.g. 1703… -> CM,
    possibly ``None``); elsewhere it is libphonenumber's carrier. ``mobile`` is a
    normalized 11-digit number.
    """
    entry = _PREFIX_TABLE.get(mobile[:PREFIX_LENGTH])
    return None if entry is None else entry[1]


def prefix_operator(mobile: str) -> Operator | None:
    """The operator the number's segment was allocated to (its original operator).

    On a :data:`CONTRACT_SEGMENTS` segment this is the contract's operator (``VNO`` on a
    virtual-operator segment); elsewhere it is libphonenumber's carrier, or ``None``.
    """
    entry = _PREFIX_TABLE.get(mobile[:PREFIX_LENGTH])
    return None if entry is None else entry[0]


def is_ported(serving_operator: str | None, mobile: str) -> bool | None:
    """Whether the provider's serving operator differs from the segment's network operator.

    ``None`` when the serving operator is missing or not an :class:`Operator` code, or
    when the segment's network operator is unknown or one the provider never reports
    (China Broadnet's numbers run on China Mobile's network and are answered as ``CM``).
    """
    if serving_operator is None:
        return None
    try:
        serving = Operator(serving_operator.strip().upper())
    except ValueError:
        return None
    network = network_operator(mobile)
    if network is None or network not in SERVING_OPERATORS:
        return None
    return serving != network


# --- Logging ----------------------------------------------------------------------------

_MASK: Final = "****"
_MIN_PARTIAL_MASK_LENGTH: Final = 8


def mask(value: object) -> str:
    """Mask a phone number (or any value) for logs: ``13912345678`` -> ``139****5678``.

    Shows at most the first 3 and last 4 characters, and nothing of values shorter than
    8 characters. The middle is a fixed ``****`` whatever its length, and non-printable
    characters in the shown part become ``?``. Never raises.
    """
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        return _MASK
    if len(text) < _MIN_PARTIAL_MASK_LENGTH:
        return "*" * len(text)
    shown = text[:3] + _MASK + text[-4:]
    return "".join(char if char.isprintable() else "?" for char in shown)


_LONG_DIGITS = re.compile(r"\d{11,}")


def error_reason(error: BaseException) -> str:
    """``ConversionException: Could not convert …``: an error's class and first line,
    every run of 11 or more digits (a phone number) masked. For messages and logs."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {_LONG_DIGITS.sub(lambda m: mask(m.group()), first)}"
