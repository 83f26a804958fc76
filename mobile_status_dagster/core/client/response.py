"""Reading one provider response: HTTP status, JSON body, case-insensitive fields."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from mobile_status_dagster.core.errors import (
    MalformedResponseError,
    ProviderError,
    RateLimitedError,
    ServerError,
    UnexpectedHTTPStatusError,
    provider_error,
)
from mobile_status_dagster.core.status import Status

SUCCESS_CODE = 2000
#: The provider signals errors under 200 and, in older APIs, 202.
_JSON_STATUSES = frozenset({200, 202})
_EXCERPT_CHARS = 60


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful (code 2000) answer."""

    message: str | None
    order_number: str | None
    status: Status
    operator: str | None


def read_answer(http_status: int, body: bytes, *, redact: str) -> Answer:
    """The answer in a response, or the typed error it carries.

    Raises:
        ProviderError: a non-2000 code (its subclass follows the error table).
        ServerError: HTTP 5xx.
        RateLimitedError: HTTP 429.
        UnexpectedHTTPStatusError: any other status the contract does not use.
        MalformedResponseError: a 200/202 body that is not the provider's JSON.
    """
    if http_status not in _JSON_STATUSES:
        if http_status >= 500:
            raise ServerError(http_status)
        if http_status == 429:
            raise RateLimitedError(None, "HTTP 429")
        raise UnexpectedHTTPStatusError(http_status)
    fields = _fields(body, redact)
    code = _code(fields, body, redact)
    message = _redacted(_optional_str(fields.get("msg")), redact)
    if code != SUCCESS_CODE:
        raise provider_error(code, message)
    return Answer(
        message=message,
        order_number=_optional_str(fields.get("order_number")),
        status=_status(fields.get("check"), body, redact),
        operator=_operator(fields.get("operator")),
    )


def _fields(body: bytes, redact: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _malformed("body is not JSON", body, redact) from None
    if not isinstance(parsed, dict):
        raise _malformed("body is not a JSON object", body, redact)
    return {str(key).lower(): value for key, value in parsed.items()}


def _code(fields: dict[str, Any], body: bytes, redact: str) -> int:
    code = fields.get("code")
    if isinstance(code, bool) or not isinstance(code, int | str):
        raise _malformed("no integer 'code' field", body, redact)
    try:
        return int(code)
    except ValueError:
        raise _malformed("'code' is not an integer", body, redact) from None


def _status(check: object, body: bytes, redact: str) -> Status:
    if isinstance(check, bool) or not isinstance(check, int | str):
        raise _malformed("no 'check' status in a 2000 answer", body, redact)
    try:
        return Status(int(check))
    except ValueError:
        raise _malformed("'check' is not a status 0-5", body, redact) from None


def _operator(value: object) -> str | None:
    text = _optional_str(value)
    return text.upper() if text else None


def _optional_str(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _redacted(text: str | None, redact: str) -> str | None:
    """``text`` without the token: a provider may echo the token it rejects in ``msg``."""
    return None if text is None else _scrub(text, redact)


def _scrub(text: str, token: str) -> str:
    """``text`` without ``token``, as sent or as a server may echo it (URL- or JSON-escaped)."""
    if not token:
        return text
    escaped = json.dumps(token)[1:-1]
    forms = {token, quote(token, safe=""), quote_plus(token), escaped, escaped.replace("/", "\\/")}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def _malformed(problem: str, body: bytes, redact: str) -> MalformedResponseError:
    return MalformedResponseError(
        f"malformed provider response ({problem}): {excerpt(body, redact)}"
    )


def excerpt(body: bytes, redact: str) -> str:
    """A short, printable, token-free quote of a body for error messages."""
    text = _scrub(body[: _EXCERPT_CHARS * 4].decode("utf-8", errors="replace"), redact)
    text = "".join(c if c.isprintable() else " " for c in text)
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "…"
    return repr(text)


__all__ = ["SUCCESS_CODE", "Answer", "ProviderError", "excerpt", "read_answer"]
