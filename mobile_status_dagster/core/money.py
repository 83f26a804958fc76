"""Money: exact decimals, never floats. The one home of the price rule."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from mobile_status_dagster.core.errors import ConfigurationError

MONEY_SQL = "DECIMAL(18, 6)"
"""How prices and costs are stored in DuckDB."""

DEFAULT_UNIT_PRICE = "0"
DEFAULT_CURRENCY = "CNY"


def parse_price(value: object, setting: str = "unit_price") -> Decimal:
    """``value`` (text such as ``"0.05"``, or a ``Decimal``) as an exact price >= 0.

    Raises :class:`ConfigurationError` naming ``setting``.
    """
    if isinstance(value, Decimal):
        price = value
    else:
        text = str(value).strip()
        try:
            price = Decimal(text)
        except InvalidOperation:
            raise ConfigurationError(setting, f"{text!r} is not a decimal number") from None
    if not price.is_finite() or price < 0:
        raise ConfigurationError(setting, f"must be a finite number >= 0, got {value!r}")
    return price
