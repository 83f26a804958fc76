"""Money: exact decimals, never floats. The one home of the price rule."""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation

from mobile_status_dagster.core.errors import ConfigurationError

MONEY_PRECISION = 18
"""Significant digits of a price or cost in DuckDB."""
MONEY_SCALE = 6
"""Decimal places of a price or cost in DuckDB."""
MONEY_SQL = f"DECIMAL({MONEY_PRECISION}, {MONEY_SCALE})"
"""How prices and costs are stored in DuckDB."""
MAX_INTEGER_DIGITS = MONEY_PRECISION - MONEY_SCALE
"""Digits a price may have before the decimal point (12)."""
MAX_PRICE = Decimal("9" * MAX_INTEGER_DIGITS + "." + "9" * MONEY_SCALE)
"""The largest price the audit can store: ``999999999999.999999``."""

DEFAULT_UNIT_PRICE = "0"
DEFAULT_CURRENCY = "CNY"

_QUANTUM = Decimal(f"1e-{MONEY_SCALE}")
_EXACT = Context(prec=2 * MONEY_PRECISION)  # quantizing a price that fits never rounds here
_QUOTE_AT_MOST = 20  # longer text is not quoted back: it may be a token pasted by mistake


def parse_price(value: object, setting: str = "unit_price") -> Decimal:
    """``value`` (text such as ``"0.05"``, or a ``Decimal``) as an exact price >= 0.

    The price must fit the audit's column, ``DECIMAL(18, 6)``: at most 12 digits before
    the decimal point and 6 after it (trailing zeros aside). It is refused, never rounded:
    money is exact. ``"1e2"`` is returned as ``Decimal("100")``.

    Raises :class:`ConfigurationError` naming ``setting``.
    """
    if isinstance(value, Decimal):
        price = value
    else:
        text = str(value).strip()
        try:
            price = Decimal(text)
        except InvalidOperation:
            raise ConfigurationError(setting, f"{_shown(text)} is not a decimal number") from None
    if not price.is_finite() or price < 0:
        raise ConfigurationError(setting, f"must be a finite number >= 0, got {_shown(value)}")
    if price > MAX_PRICE:
        raise ConfigurationError(
            setting,
            f"must have at most {MAX_INTEGER_DIGITS} digits before the decimal point "
            f"(at most {MAX_PRICE}, the audit stores prices as {MONEY_SQL}), "
            f"got {_shown(value)}",
        )
    exponent = price.as_tuple().exponent
    assert isinstance(exponent, int)  # a finite decimal
    if exponent < -MONEY_SCALE:
        exact = price.quantize(_QUANTUM, context=_EXACT)
        if exact != price:
            raise ConfigurationError(
                setting,
                f"must have at most {MONEY_SCALE} decimal places (the audit stores prices "
                f"as {MONEY_SQL}; a price is never rounded), got {_shown(value)}",
            )
        price = exact
    elif exponent > 0:
        price = price.quantize(Decimal(1), context=_EXACT)
    return price.copy_abs() if price.is_zero() else price  # not -0


def _shown(value: object) -> str:
    text = repr(value) if not isinstance(value, Decimal) else repr(str(value))
    if len(text) <= _QUOTE_AT_MOST + 2 and text.isprintable():
        return text
    return f"a value of {len(str(value))} characters (not shown)"
